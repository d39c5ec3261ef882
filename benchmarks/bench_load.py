"""Load: many threads and many concurrent asyncio calls through a wrapped client.

Real SDK over HTTP to the simulator, real embedded store in a temporary folder. Prints, per load:
calls, failures, throughput, p50/p99 latency raw and wrapped (the difference is what distillkit
adds on the request path), points stored against points captured, and peak RSS.

Reproduce (figures in README.md, "Reliability")::

    python benchmarks/bench_load.py                       # 8 threads x 500, 1,000 concurrent asyncio
    python benchmarks/bench_load.py --threads 4 --per-thread 100 --concurrent 200
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.testing import Simulator

WORDS = (  # noqa: SIM905 - a word list reads better as text
    "card account refund loan mortgage pin transfer fraud travel insurance stock bond savings credit "
    "debit limit fee branch cheque salary pension tax invoice payment overdraft interest currency "
    "exchange wallet phone address statement dispute charge merchant online abroad cash deposit "
    "withdrawal balance freeze unlock password login app update delivery replace expired stolen lost "
    "blocked declined pending business student joint premium gold crypto budget "
).split()


def distinct_texts(n: int, seed: int) -> list[str]:
    """``n`` different questions, far enough apart that capture does not merge them as duplicates."""
    rng = random.Random(seed)
    texts: set[str] = set()
    while len(texts) < n:
        texts.add(f"Question {len(texts)}: " + " ".join(rng.sample(WORDS, 7)) + "?")
    return sorted(texts)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class RssPeak:
    """Samples this process's resident memory every 50 ms; ``peak`` in MiB."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20


def threaded(client: Any, texts: list[str], threads: int) -> tuple[list[float], int]:
    """Send ``texts`` from ``threads`` threads; return per-call seconds and failed calls."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    chunks = [texts[i::threads] for i in range(threads)]

    def work(chunk: list[str]) -> None:
        nonlocal failures
        for text in chunk:
            start = time.perf_counter()
            try:
                client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": text}])
            except Exception:
                with lock:
                    failures += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    workers = [threading.Thread(target=work, args=(chunk,)) for chunk in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies, failures


async def concurrent(client: Any, texts: list[str]) -> tuple[list[float], int]:
    """Send every text at once from one event loop; return per-call seconds and failed calls."""

    async def one(text: str) -> float:
        start = time.perf_counter()
        await client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": text}])
        return time.perf_counter() - start

    results = await asyncio.gather(*(one(t) for t in texts), return_exceptions=True)
    latencies = [r for r in results if isinstance(r, float)]
    return latencies, len(results) - len(latencies)


def run_load(
    name: str,
    simulator: Simulator,
    texts: list[str],
    send: Callable[[Any, list[str]], tuple[list[float], int]],
    make_client: Callable[[], Any],
    path: str,
) -> dict[str, Any]:
    """One load, raw then wrapped, with a fresh Distiller in ``path``."""
    raw_latencies, raw_failures = send(make_client(), [f"raw {t}" for t in texts])
    distiller = Distiller(DistillConfig(path=path))
    distiller.embedder.embed(["warm up"])  # load the embedder and open the store before timing
    distiller.store  # noqa: B018
    client = distillkit.wrap(make_client(), distiller)
    try:
        with RssPeak() as rss:
            start = time.perf_counter()
            latencies, failures = send(client, texts)
            elapsed = time.perf_counter() - start
            assert distiller.flush(300), "capture did not finish"
            drained = time.perf_counter() - start
        counters = distiller.stats()["default"]
        stored = distiller.store.count(namespace="default")
    finally:
        distiller.close()
    return {
        "load": name,
        "calls": len(texts),
        "failed": failures + raw_failures,
        "calls_per_s": len(texts) / elapsed,
        "drained_s": drained,
        "raw_p50_ms": 1000 * statistics.median(raw_latencies),
        "raw_p99_ms": 1000 * percentile(raw_latencies, 0.99),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "added_p99_ms": 1000 * (percentile(latencies, 0.99) - percentile(raw_latencies, 0.99)),
        "captured": counters.captured,
        "deduplicated": counters.deduplicated,
        "dropped": counters.dropped,
        "stored": stored,
        "peak_rss_mib": rss.peak_mib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--per-thread", type=int, default=500)
    parser.add_argument("--concurrent", type=int, default=1000)
    args = parser.parse_args()
    logging.getLogger("httpx2").setLevel(logging.WARNING)

    rows = []
    with Simulator() as simulator, tempfile.TemporaryDirectory() as tmp:
        texts = distinct_texts(args.threads * args.per_thread + args.concurrent, seed=1)
        thread_texts, async_texts = texts[: args.threads * args.per_thread], texts[args.threads * args.per_thread :]
        rows.append(
            run_load(
                f"{args.threads} threads x {args.per_thread}",
                simulator,
                thread_texts,
                lambda c, t: threaded(c, t, args.threads),
                lambda: simulator.client(max_retries=0),
                f"{tmp}/threads",
            )
        )

        def send_async(client: Any, batch: list[str]) -> tuple[list[float], int]:
            async def go() -> tuple[list[float], int]:
                try:
                    return await concurrent(client, batch)
                finally:
                    await client.close()

            return asyncio.run(go())

        rows.append(
            run_load(
                f"{args.concurrent} concurrent asyncio",
                simulator,
                async_texts,
                send_async,
                lambda: simulator.async_client(max_retries=0),
                f"{tmp}/async",
            )
        )
    print(f"{psutil.cpu_count()} CPUs; simulator, SDK and distillkit in one process")
    header = (
        "load",
        "calls",
        "failed",
        "calls/s",
        "raw p99 ms",
        "p99 ms",
        "added p99 ms",
        "captured",
        "stored",
        "dropped",
        "peak RSS MiB",
    )
    print(" | ".join(header))
    for r in rows:
        print(
            " | ".join(
                str(x)
                for x in (
                    r["load"],
                    r["calls"],
                    r["failed"],
                    f"{r['calls_per_s']:.0f}",
                    f"{r['raw_p99_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    f"{r['added_p99_ms']:.1f}",
                    r["captured"],
                    r["stored"],
                    r["dropped"],
                    f"{r['peak_rss_mib']:.0f}",
                )
            )
        )
    print(
        "reproduce: python benchmarks/bench_load.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    )


if __name__ == "__main__":
    main()
