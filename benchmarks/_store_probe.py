"""Store probe: filtered top-k search latency and upsert throughput (prints figures; not a test).

PYTHONPATH=. python benchmarks/_store_probe.py [--sizes 10000 100000] [--server-size 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

import numpy as np

from distillkit.store import EdgeStore, EmbedderInfo, Point, ServerStore, Store

DIM = 256
EMB = EmbedderInfo("probe", DIM)


def fill(store: Store, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """Upsert n random points in batches of 64: (points/s, slowest batch in s)."""
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    slowest, t0 = 0.0, time.perf_counter()
    for i in range(0, n, 64):
        batch = [
            Point(
                str(uuid.uuid4()),
                {"namespace": f"ns{j % 4}", "fingerprint": f"fp{j % 3}", "indexed": j % 2 == 0, "query": "q"},
                x[j].tolist(),
            )
            for j in range(i, min(n, i + 64))
        ]
        t = time.perf_counter()
        store.upsert(batch)
        slowest = max(slowest, time.perf_counter() - t)
    return n / (time.perf_counter() - t0), slowest


def search_ms(store: Store, rng: np.random.Generator, runs: int = 500, limit: int = 8) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        q = rng.standard_normal(DIM).tolist()
        t = time.perf_counter()
        hits = store.search(q, namespace="ns1", fingerprint="fp2", indexed=False, limit=limit)
        times.append((time.perf_counter() - t) * 1000)
    assert hits, "the filter should match points"
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--server-size", type=int, default=10_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as d, EdgeStore(d, EMB) as store:
            rate, slowest = fill(store, n, rng)
            p50, p99 = search_ms(store, rng)
            print(
                f"edge   n={n:>7}: upsert {rate:,.0f} pts/s (slowest batch {slowest:.2f} s), "
                f"filtered top-8 p50 {p50:.2f} ms p99 {p99:.2f} ms"
            )
            store.optimize()
            p50, p99 = search_ms(store, rng)
            print(f"edge   n={n:>7}: after optimize(): filtered top-8 p50 {p50:.2f} ms p99 {p99:.2f} ms")
    if args.server_size:
        from qdrant_client import QdrantClient

        with tempfile.TemporaryDirectory() as d:
            client = QdrantClient(path=d)
            store = ServerStore(EMB, client=client)
            rate, _ = fill(store, args.server_size, rng)
            p50, p99 = search_ms(store, rng, runs=50)
            print(
                f"server n={args.server_size:>7} (qdrant-client local mode): upsert {rate:,.0f} pts/s, "
                f"filtered top-8 p50 {p50:.2f} ms p99 {p99:.2f} ms"
            )
            client.close()


if __name__ == "__main__":
    main()
