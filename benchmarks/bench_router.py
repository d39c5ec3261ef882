"""The routing decision (embed + search + decide, default rule) at 1k, 10k and 100k points; capture throughput.

Runs the router's own code (``Router.decide``) on the embedded default store (qdrant-edge) and
on qdrant-client's local mode side by side. Stored points: real BANKING77 queries embedded
with the default embedder, each with its intent's canned teacher answer, topped up with
paraphrase-like vectors (a real one moved to cosine 0.85-0.90 of it, answers of their own) to
reach the size, then indexed; every ``1 / --untrained``-th point is
traffic not yet trained (``indexed: False``), which the agreement rule's veto searches. Queries:
BANKING77 test queries of the same namespace and task.

    python benchmarks/bench_router.py [--sizes 1000 10000 100000] [--local-sizes 1000 10000] [--queries 300]
                                      [--untrained 0.1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable

import numpy as np
from _data import banking77

from distillkit import DistillConfig, Distiller
from distillkit.capture.sink import Captured
from distillkit.routing.embedders import Embedder, make_embedder
from distillkit.routing.request import Request, RouteInfo, fingerprint
from distillkit.state import ActiveModel
from distillkit.store import EdgeStore, EmbedderInfo, Point, ServerStore, Store

MODEL = "gpt-4.1"
STUDENT = "ft:gpt-4.1-nano-2025-04-14:bench::x"
NAMESPACES = ("support", "billing", "search", "triage")


def kwargs_for(text: str) -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Bank support."}, {"role": "user", "content": text}],
    }


def fill(
    store: Store,
    vectors: np.ndarray,
    train: list[tuple[str, str]],
    task: str,
    untrained: float,
    namespaces: int = 4,
) -> None:
    """Store ``vectors``: ``namespaces`` in turn ("support" first), a quarter on other tasks, a share
    ``untrained`` not yet trained."""
    names = NAMESPACES if namespaces == 4 else ("support", *(f"ns{k}" for k in range(1, namespaces)))
    every = round(1 / untrained) if untrained > 0 else 0
    for start in range(0, len(vectors), 512):
        points = []
        for i in range(start, min(start + 512, len(vectors))):
            text, intent = train[i] if i < len(train) else ("", f"random {i}")
            k = i // len(names)  # the point's place in its namespace (every namespace gets each kind)
            indexed = not every or k % every != every - 1
            points.append(
                Point(
                    str(uuid.uuid4()),
                    {
                        "namespace": names[i % len(names)],
                        "fingerprint": task if k % 4 != 3 else "other-task",
                        "query": text,
                        "response": {"role": "assistant", "content": f"Canned answer about {intent}."},
                        "indexed": indexed,
                        **({"distilled_model": STUDENT} if indexed else {}),
                    },
                    vectors[i].tolist(),
                )
            )
        store.upsert(points)


def paraphrase_like(real: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``real``'s first ``n`` rows, topped up with real rows moved to cosine 0.85-0.90 of themselves.

    (Uniformly random unit vectors, used before, form no neighbourhoods: a graph built mostly of
    them never reaches the real cluster, and recall@5 fell to 0.5-0.75.)
    """
    if n <= len(real):
        return real[:n]
    m = n - len(real)
    base = real[rng.integers(0, len(real), m)]
    noise = rng.standard_normal((m, real.shape[1])).astype(np.float32)
    noise -= (noise * base).sum(1, keepdims=True) * base  # orthogonal to its source
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cosine = rng.uniform(0.85, 0.90, m).astype(np.float32)
    extra = base + np.sqrt(1 / cosine**2 - 1)[:, None] * noise
    return np.vstack([real, extra / np.linalg.norm(extra, axis=1, keepdims=True)])


def percentiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=100)
    return statistics.median(values), q[98]


class PrecomputedEmbedder:
    """The default embedder's vectors, computed before the clock starts: timings without the embedding."""

    def __init__(self, embedder: Embedder, texts: list[str]) -> None:
        self.name, self.dim = embedder.name, embedder.dim
        self._embedder = embedder
        self._vectors = dict(zip(texts, embedder.embed(texts), strict=True))

    def embed(self, texts) -> np.ndarray:
        try:
            return np.stack([self._vectors[t] for t in texts])
        except KeyError:
            return self._embedder.embed(texts)


def decide_once(distiller: Distiller, text: str) -> tuple[float, bool]:
    request = Request(kwargs_for(text), namespace="support", threshold=None, route=True, capture=True)
    start = time.perf_counter()
    info: RouteInfo = distiller.router.decide(request)
    return time.perf_counter() - start, info.routed


def time_interleaved(distillers: dict, queries: list[str]) -> dict:
    """p50 / p99 (ms) and routed share per distiller, the distillers taking turns on each query (same load)."""
    samples: dict = {key: [] for key in distillers}
    routed: dict = dict.fromkeys(distillers, 0)
    for text in queries[:20]:  # warm-up
        for d in distillers.values():
            decide_once(d, text)
    for text in queries:
        for key, d in distillers.items():
            elapsed, was_routed = decide_once(d, text)
            samples[key].append(elapsed)
            routed[key] += was_routed
    out = {}
    for key, values in samples.items():
        p50, p99 = percentiles(values)
        out[key] = (p50 * 1e3, p99 * 1e3, routed[key] / len(queries))
    return out


def captured(texts: list[str], vectors: np.ndarray | None) -> list[Captured]:
    items = []
    for i, text in enumerate(texts):
        request = Request(kwargs_for(text), namespace="support", threshold=None, route=True, capture=True)
        if vectors is not None:
            request.vector = vectors[i]  # as when the router embedded it: the sink reuses it
        message = {"role": "assistant", "content": f"About: {text}"}
        items.append(Captured(request, request.kwargs["messages"], message, "stop", {"total_tokens": 20}))
    return items


def capture_run(
    distiller: Distiller, items: list[Captured], probe: list[str] | None = None
) -> tuple[float, list[float]]:
    """Feed ``items`` through the capture writer at full speed (never past its queue); interactions/s.

    With ``probe``, another thread makes routing decisions meanwhile (one per millisecond) and their
    latencies come back: the stall a request sees while captures are written and indexed.
    """
    latencies: list[float] = []
    done = threading.Event()

    def prober() -> None:
        i = 0
        while not done.is_set():
            latencies.append(decide_once(distiller, probe[i % len(probe)])[0])
            i += 1
            time.sleep(0.001)

    thread = threading.Thread(target=prober, name="probe") if probe else None
    if thread:
        thread.start()
    writer = distiller._writer
    room = distiller.config.capture_queue_size // 2
    start = time.perf_counter()
    for item in items:
        while len(writer._queue) > room:  # never drop: a sustained rate, not a burst
            time.sleep(0.001)
        writer.submit(item)
    distiller.flush()
    elapsed = time.perf_counter() - start
    done.set()
    if thread:
        thread.join()
    return len(items) / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument(
        "--local-sizes",
        type=int,
        nargs="*",
        default=[],
        help="sizes for qdrant-client local mode (slow above 10k: ~540 ms a search at 50k)",
    )
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--capture", type=int, default=20_000, help="interactions for the capture throughput")
    parser.add_argument(
        "--stall-points", type=int, default=100_000, help="captures written while routing is probed (0: skip)"
    )
    parser.add_argument("--untrained", type=float, default=0.1, help="share of stored points not yet trained")
    parser.add_argument("--namespaces", type=int, default=4, help="namespaces the stored points spread over")
    parser.add_argument("--embedder", default="minilm", help="minilm (the default embedder) or wordllama")
    args = parser.parse_args()

    embedder = make_embedder(args.embedder)
    info = EmbedderInfo(embedder.name, embedder.dim)
    labelled = banking77("train")
    train = [t for t, _ in labelled]
    test = [t for t, _ in banking77("test")][: args.queries]
    precomputed = PrecomputedEmbedder(embedder, test)
    real = embedder.embed(train)
    rng = np.random.default_rng(0)
    task = fingerprint(kwargs_for("x"))

    def vectors(n: int) -> np.ndarray:
        return paraphrase_like(real, n, rng)

    backends: list[tuple[str, list[int], Callable[[str], Store]]] = [
        ("edge (default)", args.sizes, lambda folder: EdgeStore(folder, info)),
        ("qdrant-client local", args.local_sizes, lambda folder: ServerStore(info, client=_local(folder))),
    ]
    folders, stores, fills = [], {}, {}
    for name, sizes, make in backends:
        for size in sizes:
            folder = tempfile.TemporaryDirectory()
            folders.append(folder)
            store = make(folder.name)
            started = time.perf_counter()
            fill(store, vectors(size), labelled, task, args.untrained, args.namespaces)
            if isinstance(store, EdgeStore):
                store.optimize()  # settled: the index holds every point (each 5k unindexed add ~0.2 ms)
            fills[(name, size)] = time.perf_counter() - started
            stores[(name, size)] = store
            print(f"  {name} {size}: filled in {fills[(name, size)]:.1f} s", flush=True)
    distillers = {}
    for (name, size), store in stores.items():
        for mode, emb in (("search+decide", precomputed), ("with embedding", embedder)):
            d = Distiller(
                DistillConfig(path=store.path if hasattr(store, "path") else "unused"), store=store, embedder=emb
            )
            d.registry.activate(ActiveModel("support", STUDENT))
            distillers[(name, size, mode)] = d
    timed = time_interleaved(distillers, test)

    print(
        f"\nrouting decision, default rule with its veto, {args.queries} BANKING77 test queries, all stores interleaved"
    )
    print(f"{'backend':<22}{'points':>9}{'what':>16}{'p50 ms':>9}{'p99 ms':>9}{'routed':>8}{'fill s':>8}")
    for (name, size, mode), (p50, p99, routed) in timed.items():
        print(f"{name:<22}{size:>9}{mode:>16}{p50:>9.3f}{p99:>9.3f}{routed:>8.2f}{fills[(name, size)]:>8.1f}")
    edge = "edge (default)"
    small, large = min(args.sizes), max(args.sizes)
    p50_small = timed[(edge, small, "search+decide")][0]
    p50_large, p99_large = timed[(edge, large, "search+decide")][:2]
    p50_large_embed = timed[(edge, large, "with embedding")][0]
    ratio = p50_large / p50_small
    for d in distillers.values():
        d.close()
    for folder in folders:
        folder.cleanup()

    print(f"\ncapture writer, {args.capture} interactions, sustained (near-duplicate check, upsert, index building)")
    capture_vectors = vectors(args.capture)
    texts = [f"{t} (#{i})" for i, t in enumerate((train * (args.capture // len(train) + 1))[: args.capture])]
    with tempfile.TemporaryDirectory() as folder:
        distiller = Distiller(DistillConfig(path=folder), store=EdgeStore(folder, info), embedder=embedder)
        capture_per_s, _ = capture_run(distiller, captured(texts, capture_vectors))
        distiller.close()
    batch = DistillConfig(path="unused").capture_batch_size
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        embedder.embed(texts[i : i + batch])
    embed_per_s = len(texts) / (time.perf_counter() - started)
    print(f"{'store part (vectors precomputed)':<36}{capture_per_s:>9.0f} interactions/s")
    print(f"{'embedder alone, batches of ' + str(batch):<36}{embed_per_s:>9.0f} texts/s")
    print(f"{'both (serial estimate)':<36}{1 / (1 / capture_per_s + 1 / embed_per_s):>9.0f} interactions/s")

    stall = None
    if args.stall_points:
        print(f"\nworst routing decision while {args.stall_points} captures are written and indexed at full speed")
        texts = [f"stall {i}" for i in range(args.stall_points)]
        with tempfile.TemporaryDirectory() as folder:
            store = EdgeStore(folder, info)
            fill(store, vectors(len(train)), labelled, task, args.untrained)
            distiller = Distiller(DistillConfig(path=folder), store=store, embedder=precomputed)
            distiller.registry.activate(ActiveModel("support", STUDENT))
            rate, latencies = capture_run(distiller, captured(texts, vectors(args.stall_points)), probe=test)
            distiller.close()
        stall = max(latencies) * 1e3
        over = sum(x > 0.1 for x in latencies)
        p50, p99 = percentiles(latencies)
        print(
            f"{len(latencies)} decisions: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, worst {stall:.0f} ms, "
            f"{over} over 100 ms; capture meanwhile {rate:.0f} interactions/s"
        )

    print("\nissue 15 goals (floors)")
    print(f"  p50 {large} / p50 {small}, search + decision: {ratio:.2f} (goal <= 1.5)")
    print(f"  p50 at {large}: {p50_large:.3f} ms (goal <= 0.5), p99 {p99_large:.3f} ms (goal <= 2)")
    print(f"  p50 at {large} with the default embedder: {p50_large_embed:.3f} ms (goal <= 2)")
    print(f"  capture, store part: {capture_per_s:.0f}/s (goal >= 10,000)")
    if stall is not None:
        print(f"  worst stall while capturing {args.stall_points}: {stall:.0f} ms (goal < 100)")
    print(
        "\nreproduce: python benchmarks/bench_router.py "
        + " ".join(
            [
                f"--sizes {' '.join(map(str, args.sizes))}",
                *([f"--local-sizes {' '.join(map(str, args.local_sizes))}"] if args.local_sizes else []),
                f"--queries {args.queries}",
                f"--capture {args.capture}",
                f"--stall-points {args.stall_points}",
                f"--untrained {args.untrained:g}",
                f"--namespaces {args.namespaces}",
            ]
        )
    )
    print(
        f"router: p50_{_short(small)}={p50_small:.3f}ms p50_{_short(large)}={p50_large:.3f}ms ratio={ratio:.2f} "
        f"capture_per_s={capture_per_s:.0f}"
    )


def _short(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def _local(folder: str):
    from qdrant_client import QdrantClient

    return QdrantClient(path=folder)


if __name__ == "__main__":
    main()
