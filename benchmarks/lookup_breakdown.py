"""Where a routing lookup's time goes: the engine's own search, and the socket to its process.

Stores as ``bench_router.py`` fills them (indexed), once with the engine in its child process (the
default) and once in this process (``engine="inline"``); each query's two lookups (the trained top
5, then the veto's untrained top 1, namespace "support") timed alone, the stores interleaved.

    python benchmarks/lookup_breakdown.py [--sizes 1000 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import numpy as np
from _data import banking77
from bench_million import lookup
from bench_router import fill, kwargs_for, paraphrase_like

from distillkit.routing.embedders import make_embedder
from distillkit.routing.request import fingerprint
from distillkit.store import EdgeStore, EmbedderInfo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    embedder = make_embedder("minilm")
    info = EmbedderInfo(embedder.name, embedder.dim)
    labelled = banking77("train")
    real = embedder.embed([t for t, _ in labelled])
    queries = embedder.embed([t for t, _ in banking77("test")][: args.queries])
    task = fingerprint(kwargs_for("x"))
    folders, stores = [], {}
    for size in args.sizes:
        vectors = paraphrase_like(real, size, np.random.default_rng(0))
        for engine in ("process", "inline"):
            folder = tempfile.TemporaryDirectory()
            folders.append(folder)
            store = EdgeStore(folder.name, info, engine=engine)  # type: ignore[arg-type]
            fill(store, vectors, labelled, task, 0.1)
            store.optimize()
            stores[(size, engine)] = store
    times: dict[tuple[int, str], dict[str, list[float]]] = {k: {"trained": [], "veto": []} for k in stores}
    for rep in range(2):  # the first is a warm-up
        for v in queries:
            for key, store in stores.items():
                trained, veto = lookup(store, v, task)
                if rep:
                    times[key]["trained"].append(trained)
                    times[key]["veto"].append(veto)
    print(f"{'points':>8}{'engine':>9}{'trained top-5 p50':>19}{'veto top-1 p50':>16}")
    for (size, engine), found in times.items():
        trained, veto = (statistics.median(found[w]) * 1e3 for w in ("trained", "veto"))
        print(f"{size:>8}{engine:>9}{trained:>16.3f} ms{veto:>13.3f} ms")
    for store in stores.values():
        store.close()
    for folder in folders:
        folder.cleanup()
    sizes = " ".join(map(str, args.sizes))
    print(f"\nreproduce: python benchmarks/lookup_breakdown.py --sizes {sizes} --queries {args.queries}")


if __name__ == "__main__":
    main()
