"""Load: threads and concurrent asyncio calls through a wrapped client, against the simulator.

No call fails, every distinct answer is stored exactly once, nothing deadlocks, and peak RSS is
reported. Sized to run in seconds; ``benchmarks/bench_load.py`` runs the full 8 x 500 threads and
1,000 concurrent asyncio calls and prints throughput and p99 added latency.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import psutil
import pytest

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.testing import Simulator

THREADS, PER_THREAD, CONCURRENT = 4, 150, 300
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
    distiller = Distiller(config)
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


def report_rss(label: str) -> None:
    rss = psutil.Process().memory_info().rss / 2**20
    print(f"\n{label}: peak-ish RSS {rss:.0f} MiB")  # shown with pytest -s


def test_threads(simulator: Simulator, loaded: Distiller) -> None:
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
    report_rss(f"{THREADS} threads x {PER_THREAD}")


async def test_concurrent_asyncio(simulator: Simulator, loaded: Distiller) -> None:
    # Every task is in flight at once, queued in an 8-connection pool: the simulator (http.server)
    # has a listen backlog of 5 and resets bursts of hundreds of new connections, wrapped or not.
    http = openai.DefaultAsyncHttpxClient(limits=httpx2.Limits(max_connections=8, max_keepalive_connections=8))
    client: Any = distillkit.wrap(simulator.async_client(http_client=http), loaded)
    texts = distinct_texts(CONCURRENT, seed=2)

    async def one(text: str) -> str:
        response = await client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": text}])
        return str(response.choices[0].message.content)

    results = await asyncio.wait_for(asyncio.gather(*(one(t) for t in texts), return_exceptions=True), 120)
    await client.close()
    assert results == [f"Answer: {t}" for t in texts]
    assert_all_stored(loaded, len(texts))
    report_rss(f"{CONCURRENT} concurrent asyncio calls")
