"""What the real-student benchmarks report of the student itself: each round's training cost and
the latency of its answers (``bench_stream.py``, ``bench_extract.py``; one table per base model in
docs/training.md)."""

from __future__ import annotations

import argparse
import resource
import statistics
from typing import Any

from distillkit import demo
from distillkit.training.lora.base_models import LOCAL_MODELS


def add_base_model(parser: argparse.ArgumentParser) -> None:
    """``--base-model``: the packaged student the benchmark trains and serves."""
    parser.add_argument(
        "--base-model",
        default=demo.LOCAL_BASE_MODEL,
        choices=sorted(LOCAL_MODELS),
        help=f"the packaged student ({demo.LOCAL_BASE_MODEL})",
    )


def training_cost(provider: Any, job_id: str | None) -> str:
    """``", 25 steps at 4.18 s, training peak RSS 3,723 MiB"`` from the LoRA job's metrics ("" without)."""
    metrics = provider.metrics(job_id) if job_id else None
    if not metrics:
        return ""
    rss = metrics.get("peak_rss_bytes") or 0
    return f", {metrics['steps']} steps at {metrics['step_s']:.2f} s, training peak RSS {rss / 2**20:,.0f} MiB"


def latency(seconds: list[float], tokens: list[int]) -> str:
    """The student's answer latency over the frontier's direct calls, and this process's peak RSS
    (the student server on llama.cpp runs in it, with the embedder and the client)."""
    if len(seconds) < 2:
        return "  student answer latency: too few answers"
    p90 = statistics.quantiles(seconds, n=10)[-1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (
        f"  student answer latency: median {statistics.median(seconds) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms "
        f"over {len(seconds)} answers of {statistics.median(tokens) if tokens else 0:.0f} tokens median; "
        f"benchmark process peak RSS (student server, embedder, client) {peak:,.0f} MiB"
    )
