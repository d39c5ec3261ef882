"""Load: threads and concurrent asyncio calls through a wrapped client, against the simulator.

No call fails, every distinct answer is stored exactly once, nothing deadlocks, and peak RSS is
reported. Sized to run in seconds; ``benchmarks/bench_load.py`` runs the full 8 x 500 threads and
1,000 concurrent asyncio calls and prints throughput and p99 added latency.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.testing import Simulator

THREADS, PER_THREAD, CONCURRENT = 8, 500, 1000  # the sizes
#: Growth of the process's memory over one load test that counts as unbounded.
MAX_GROWTH_MIB = 400
WORDS = (  # noqa: SIM905 - a word list reads better as text
    "card account refund loan mortgage pin transfer fraud travel insurance stock bond savings credit "
    "debit limit fee branch cheque salary pension tax invoice payment overdraft interest currency "
    "exchange wallet phone address statement dispute charge merchant online abroad cash "
).split()


def distinct_texts(n: int, seed: int) -> list[str]:
    """Different questions, far enough apart that capture does not merge them as duplicates."""
    rng = random.Random(seed)
    texts: set[str] = set()
    while len(texts) < n:
        texts.add(f"Question {len(texts)}: " + " ".join(rng.sample(WORDS, 7)) + "?")
    return sorted(texts)


@pytest.fixture
def loaded(config: DistillConfig) -> Iterator[Distiller]:
    # WordLlama: these tests load the interception and capture paths with thousands of calls under
    # pytest's timeout; MiniLM's ~2 ms per captured text (one thread) would make them time the
    # embedder on a shared 2-core machine instead (benchmarks/bench_embedder.py does that).
    distiller = Distiller(dataclasses.replace(config, embedder="wordllama"))
    yield distiller
    distiller.close()


def assert_all_stored(distiller: Distiller, calls: int) -> None:
    assert distiller.flush(120), "the capture writer did not drain: deadlock or stall"
    counters = distiller.stats()["default"]
    assert counters.requests == counters.teacher == calls
    assert counters.dropped == 0 and counters.skipped == 0
    assert counters.captured + counters.deduplicated == calls
    assert distiller.store.count(namespace="default") == counters.captured
    assert counters.captured >= calls * 0.99  # distinct texts: (almost) nothing merged


def rss_mib() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def report_rss(label: str, before: float) -> None:
    rss = rss_mib()
    print(f"\n{label}: RSS {rss:.0f} MiB (+{rss - before:.0f})")  # shown with pytest -s
    assert rss - before < MAX_GROWTH_MIB, "memory grew without bound under load"


def test_threads(simulator: Simulator, loaded: Distiller) -> None:
    before = rss_mib()
    client: Any = distillkit.wrap(simulator.client(), loaded)
    texts = distinct_texts(THREADS * PER_THREAD, seed=1)
    failures: list[BaseException] = []

    def work(chunk: list[str]) -> None:
        for text in chunk:
            try:
                response = client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": text}])
                assert response.choices[0].message.content == f"Answer: {text}"
            except BaseException as exc:
                failures.append(exc)

    workers = [threading.Thread(target=work, args=(texts[i::THREADS],)) for i in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert not any(w.is_alive() for w in workers), "a request thread hung"
    assert failures == []
    assert_all_stored(loaded, len(texts))
    report_rss(f"{THREADS} threads x {PER_THREAD}", before)


async def test_concurrent_asyncio(simulator: Simulator, loaded: Distiller) -> None:
    # Every task is in flight at once, on the SDK's default connection pool.
    before = rss_mib()
    client: Any = distillkit.wrap(simulator.async_client(), loaded)
    texts = distinct_texts(CONCURRENT, seed=2)

    async def one(text: str) -> str:
        response = await client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": text}])
        return str(response.choices[0].message.content)

    results = await asyncio.wait_for(asyncio.gather(*(one(t) for t in texts), return_exceptions=True), 120)
    await client.close()
    assert results == [f"Answer: {t}" for t in texts]
    assert_all_stored(loaded, len(texts))
    report_rss(f"{CONCURRENT} concurrent asyncio calls", before)
