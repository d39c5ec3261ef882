"""The embedded store at a million points: fill, index, disk, memory, reopening, search latency.

Fills one store per ``--namespaces`` value with ``--points`` points as ``bench_router.py`` does
(BANKING77 train queries embedded with the default embedder, topped up with paraphrase-like
vectors; every namespace gets untrained points), through ``EdgeStore.upsert`` in batches of 512,
the engine building its index in its process as it goes. Then: one last build, the folder's size
on disk, the engine process's resident memory, the time to close and open the store again, and the
routing lookups of 300 BANKING77 test queries in namespace "support" (the trained top 5, then the
veto's untrained top 1), p50 and p99. The worst lookup while the store was filled is measured by a
thread that searches every 10 ms meanwhile (with the router's 50 ms timeout: "busy" counts them).

    python benchmarks/bench_million.py [--points 1000000] [--namespaces 1 100]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _data import banking77
from bench_router import fill, kwargs_for, paraphrase_like, percentiles

from distillkit.errors import StoreBusyError
from distillkit.routing.embedders import make_embedder
from distillkit.routing.request import fingerprint
from distillkit.store import EdgeStore, EmbedderInfo

TIMEOUT = 0.05


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def du_mb(folder: str) -> float:
    return int(subprocess.run(["du", "-sk", folder], capture_output=True, text=True).stdout.split()[0]) / 1024


def prober(store: EdgeStore, queries: np.ndarray, done: threading.Event, probe: list[float], busy: list[int]) -> None:
    """A lookup every 10 ms until ``done``: its latencies into ``probe``, one entry in ``busy`` per timeout."""
    while not done.is_set():
        started = time.perf_counter()
        try:
            store.search(queries[len(probe) % len(queries)], namespace="support", limit=5, timeout=TIMEOUT)
        except StoreBusyError:
            busy.append(1)
        probe.append(time.perf_counter() - started)
        time.sleep(0.01)


def lookup(store: EdgeStore, vector: np.ndarray, task: str) -> tuple[float, float]:
    """One routing lookup's two searches in "support", timed: the trained top 5, the veto's untrained top 1."""
    started = time.perf_counter()
    store.search(vector, namespace="support", fingerprint=task, indexed=True, limit=5, fields=("response",))
    middle = time.perf_counter()
    store.search(vector, namespace="support", fingerprint=task, indexed=False, limit=1, fields=("response",))
    return middle - started, time.perf_counter() - middle


def lookups(store: EdgeStore, queries: np.ndarray, task: str) -> tuple[list[float], list[float]]:
    timed = [lookup(store, v, task) for v in queries]
    return [t for t, _ in timed], [v for _, v in timed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--namespaces", type=int, nargs="+", default=[1, 100])
    args = parser.parse_args()

    embedder = make_embedder("minilm")
    info = EmbedderInfo(embedder.name, embedder.dim)
    labelled = banking77("train")
    real = embedder.embed([t for t, _ in labelled])
    queries = embedder.embed([t for t, _ in banking77("test")][:300])
    task = fingerprint(kwargs_for("x"))
    vectors = paraphrase_like(real, args.points, np.random.default_rng(0))
    rows = []
    for namespaces in args.namespaces:
        with tempfile.TemporaryDirectory() as folder:
            store = EdgeStore(folder, info)
            probe: list[float] = []
            busy: list[int] = []
            done = threading.Event()
            thread = threading.Thread(target=prober, args=(store, queries, done, probe, busy))
            started = time.perf_counter()
            thread.start()
            fill(store, vectors, labelled, task, 0.1, namespaces)
            done.set()
            thread.join()
            filled = time.perf_counter() - started
            started = time.perf_counter()
            store.optimize()
            built = time.perf_counter() - started
            assert store.engine_pid is not None
            memory = rss_mb(store.engine_pid)
            disk = du_mb(folder)
            store.close()
            started = time.perf_counter()
            store = EdgeStore(folder, info)
            opened = time.perf_counter() - started
            lookups(store, queries[:50], task)  # warm
            trained, veto = lookups(store, queries, task)
            store.close()
        row = {
            "namespaces": namespaces,
            "fill_s": filled,
            "last_build_s": built,
            "disk_mb": disk,
            "engine_rss_mb": memory,
            "open_s": opened,
            "trained": percentiles(trained),
            "veto": percentiles(veto),
            "probe_worst_ms": max(probe) * 1e3,
            "probe_busy": len(busy),
            "probes": len(probe),
        }
        rows.append(row)
        print(row, flush=True)

    print(f"\n{args.points:,} points, MiniLM 384-d, 10% untrained; lookups in 'support' (300 queries)")
    print(
        f"{'namespaces':>10}{'fill s':>8}{'build s':>8}{'disk MB':>9}{'RSS MB':>8}{'open s':>8}"
        f"{'top5 p50':>10}{'p99':>7}{'veto p50':>10}{'p99':>7}{'worst ms':>9}  busy"
    )
    for r in rows:
        print(
            f"{r['namespaces']:>10}{r['fill_s']:>8.0f}{r['last_build_s']:>8.1f}{r['disk_mb']:>9.0f}"
            f"{r['engine_rss_mb']:>8.0f}{r['open_s']:>8.2f}{r['trained'][0] * 1e3:>10.3f}{r['trained'][1] * 1e3:>7.2f}"
            f"{r['veto'][0] * 1e3:>10.3f}{r['veto'][1] * 1e3:>7.2f}{r['probe_worst_ms']:>9.0f}"
            f"  {r['probe_busy']}/{r['probes']}"
        )
    print(
        f"\nreproduce: python benchmarks/bench_million.py --points {args.points} "
        f"--namespaces {' '.join(map(str, args.namespaces))}"
    )


if __name__ == "__main__":
    main()
