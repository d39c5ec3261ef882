"""The student's token log-probabilities: what they add to a request's latency, now and the old way.

The same short chat requests (BANKING77 test queries, ``../shared/data``; greedy, ``max_tokens``
40) go to the packaged SmolLM2-135M base three ways, interleaved request by request so that a
change in the machine's load touches all three alike:

- **plain**: the student's :class:`~distillkit.student.engine.Engine`, without ``logprobs``;
- **logprobs**: the same engine class asked ``logprobs: true`` (each sampled token's
  log-probability, read from the logits llama.cpp computes for the last position anyway);
- **old**: what the student did before: llama.cpp with ``logits_all=True`` (the output layer for
  every prompt token) and llama-cpp-python's own logprobs.

Each way has its own model, so each sees the queries in the same order with the same prompt
cache. ``overhead`` is the median over requests of (latency with logprobs / plain latency of the
same query, timed just before or after it) - 1: paired, so that other work on the cores, which
comes and goes, does not swamp a difference of a few percent. The ratio of the medians is printed
too.

    python benchmarks/bench_logprobs.py               # 50 requests, max_tokens 40
    python benchmarks/bench_logprobs.py --top 5       # with top_logprobs 5
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from _data import banking77

from distillkit.student import SMOLLM2
from distillkit.student.engine import Engine
from distillkit.training.lora.base_models import with_system_prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--top", type=int, default=0, help="top_logprobs (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's)")
    args = parser.parse_args()

    import llama_cpp

    load_at_start = os.getloadavg()[0]
    rows = banking77("test")
    random.Random(0).shuffle(rows)
    queries = [[{"role": "user", "content": text}] for text, _ in rows[: args.requests]]
    body = {"model": SMOLLM2, "max_tokens": args.max_tokens, "temperature": 0.0}

    plain = Engine(SMOLLM2, n_threads=args.threads)
    asked = Engine(SMOLLM2, n_threads=args.threads)
    # The old Engine(logprobs=True): the same settings (flash attention, see Engine) with logits_all.
    old = llama_cpp.Llama(
        model_path=str(plain.base_gguf),
        n_ctx=1024,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        logits_all=True,
        flash_attn=True,
        verbose=False,
    )
    system = plain.system_prompt

    def old_chat(messages: list[dict[str, str]]) -> Any:
        return old.create_chat_completion(
            messages=with_system_prompt(messages, system),  # type: ignore[arg-type]
            max_tokens=args.max_tokens,
            temperature=0.0,
            logprobs=True,
            top_logprobs=args.top,
        )

    ways: dict[str, Callable[[list[dict[str, str]]], Any]] = {
        "plain": lambda m: plain.chat({**body, "messages": m}),
        "logprobs": lambda m: asked.chat({**body, "messages": m, "logprobs": True, "top_logprobs": args.top}),
        "old": old_chat,
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    answers: dict[str, list[str]] = {name: [] for name in ways}
    tokens: list[int] = []
    try:
        for messages in queries[:3]:  # warm-up: page the weights in, fill the caches
            for way in ways.values():
                way(messages)
        names = list(ways)
        for i, messages in enumerate(queries):
            for name in names[i % 3 :] + names[: i % 3]:  # rotate who goes first
                started = time.perf_counter()
                result = ways[name](messages)
                seconds[name].append(time.perf_counter() - started)
                answers[name].append(result["choices"][0]["message"]["content"] or "")
                if name == "logprobs":
                    tokens.append(len(result["choices"][0]["logprobs"]["content"]))
    finally:
        plain.close()
        asked.close()
        old.close()

    median = {name: statistics.median(s) for name, s in seconds.items()}
    overhead, old_overhead = (
        statistics.median(a / b - 1 for a, b in zip(seconds[name], seconds["plain"], strict=True))
        for name in ("logprobs", "old")
    )
    same = sum(a == b == c for a, b, c in zip(answers["plain"], answers["logprobs"], answers["old"], strict=True))
    load = f"{load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end (1-minute load average)"
    print(f"model: {SMOLLM2} (llama.cpp {llama_cpp.__version__}), threads: {args.threads or 'default'}")
    print(f"cores: {os.cpu_count()}, load: {load}")
    print(
        f"requests: {len(queries)} BANKING77 test queries, max_tokens {args.max_tokens}, greedy, "
        f"top_logprobs {args.top}; tokens per answer: median {statistics.median(tokens):.0f}, "
        f"mean {statistics.fmean(tokens):.1f}"
    )
    print(f"answers identical across the three ways: {same}/{len(queries)}")
    for name, label in (
        ("plain", "no logprobs"),
        ("logprobs", "logprobs (last position's logits)"),
        ("old", "old: logits_all + llama-cpp-python's logprobs"),
    ):
        s = seconds[name]
        q = statistics.quantiles(s, n=10)
        print(f"  {label:<48} median {median[name] * 1000:7.1f} ms   p10 {q[0] * 1000:7.1f}   p90 {q[-1] * 1000:7.1f}")
    print(
        f"ratio of the medians - 1: {median['logprobs'] / median['plain'] - 1:+.3f} with logprobs, "
        f"{median['old'] / median['plain'] - 1:+.3f} the old way"
    )
    print(f"paired (per query) median overhead: {overhead:+.3f} with logprobs, {old_overhead:+.3f} the old way")
    print(" ".join(["command: python benchmarks/bench_logprobs.py", *map(shlex.quote, sys.argv[1:])]))
    print(f"logprobs: overhead={overhead:.2f} old_overhead={old_overhead:.2f}")


if __name__ == "__main__":
    main()
