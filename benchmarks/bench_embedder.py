"""Per-query latency and batch throughput of the embedders (one process, one thread for MiniLM).

    python benchmarks/bench_embedder.py [--embedders minilm wordllama] [--queries 2000]

Prints p50/p99 of one ``embed([text])`` call and texts per second for batches of 32, on
BANKING77-like short banking queries. Timings on a shared machine are skewed by other load:
compare rows of one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from distillkit.routing.embedders import make_embedder

TEXTS = [
    "Where is my card?",
    "I still have not received my new card, I ordered over a week ago.",
    "How do I open a savings account?",
    "Why was I charged a fee for transferring money to my friend abroad?",
    "My top up did not go through, what should I do?",
    "Can I change my PIN at an ATM?",
    "The exchange rate applied to my card payment looks wrong.",
    "How long does a bank transfer take to arrive?",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--embedders", nargs="+", default=["minilm", "wordllama"])
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    for name in args.embedders:
        started = time.perf_counter()
        embedder = make_embedder(name)
        load = time.perf_counter() - started
        for text in TEXTS:  # warm up
            embedder.embed([text])
        times = []
        for i in range(args.queries):
            t = time.perf_counter()
            embedder.embed([f"{TEXTS[i % len(TEXTS)]} ({i})"])
            times.append(time.perf_counter() - t)
        batch = [f"{TEXTS[i % len(TEXTS)]} ({i})" for i in range(32)]
        t = time.perf_counter()
        rounds = max(1, args.queries // 32)
        for _ in range(rounds):
            embedder.embed(batch)
        per_second = rounds * 32 / (time.perf_counter() - t)
        p50, p99 = np.percentile(np.array(times) * 1000, [50, 99])
        print(
            f"{embedder.name:32s} load {load:5.2f} s  p50 {p50:.3f} ms  p99 {p99:.3f} ms"
            f"  batch-32 {per_second:,.0f} texts/s"
        )


if __name__ == "__main__":
    main()
