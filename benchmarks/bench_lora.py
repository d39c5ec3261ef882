"""LoRA training through the provider: time per 1,000 examples, peak memory, loss, on real queries.

The examples are BANKING77 training queries (``../shared/data``) with the demo's canned
teacher answer per intent, in the system + user + assistant shape distillkit captures. The job
runs exactly as in production: ``LoRAFineTuningProvider.start`` → a separate training process
→ ``poll`` until it ends. The figures come from the job's own ``metrics.json``.

    python benchmarks/bench_lora.py --base-model Qwen/Qwen2.5-0.5B-Instruct   # on a GPU machine
    python benchmarks/bench_lora.py                                           # a tiny random model, CPU

Without ``--base-model`` a tiny two-layer model is built on the spot (nothing is downloaded):
that measures the harness and the process overhead, not what a real model costs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

from _data import banking77

from distillkit.demo import canned_answer
from distillkit.training import LoRAFineTuningProvider, LoRASettings, OpenAIDatasetProvider

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
SYSTEM = "You are a bank's support assistant. Answer briefly."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", help="local folder or hub id (default: a tiny model built here)")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the base model's")
    parser.add_argument("--rank", type=int, default=None, help="default: the base model's")
    parser.add_argument("--device", default=None, help="cuda, cpu (default: cuda when available)")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="default: the base model's")
    parser.add_argument("--threads", type=int, default=None, help="default: the cores this process may use")
    args = parser.parse_args()

    rows = banking77("train")
    random.Random(0).shuffle(rows)
    rows = rows[: args.examples]
    records = [
        {
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            "response": {"role": "assistant", "content": canned_answer(intent)},
            "params": {},
        }
        for text, intent in rows
    ]
    dataset = OpenAIDatasetProvider().build(records)
    with tempfile.TemporaryDirectory() as folder:
        base = args.base_model
        if base is None:
            from distillkit.testing.tiny_model import build_tiny_chat_model

            texts = [t for r in records for t in (r["messages"][1]["content"], r["response"]["content"])]
            base = str(build_tiny_chat_model(Path(folder) / "tiny", [SYSTEM, *texts], vocab_size=2000))
        # The library's own defaults for this base model (DISTILLKIT_LORA_* apply), a fixed amount of
        # work (every epoch: no early stop), and what the command line sets.
        given = {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "rank": args.rank,
            "device": args.device,
            "max_batch_tokens": args.max_batch_tokens,
            "threads": args.threads,
        }
        settings = dataclasses.replace(
            LoRASettings.configured(args.base_model),
            stop_exact=0.0,
            **{k: v for k, v in given.items() if v is not None},
        )
        provider = LoRAFineTuningProvider(Path(folder) / "lora", base_model=base, settings=settings)
        started = time.monotonic()
        job_id = provider.start(dataset.data, base_model=base, namespace="bench")
        while not (status := provider.poll(job_id)).done:
            time.sleep(0.5)
        wall = time.monotonic() - started
        if not status.succeeded:
            log = (provider.job_dir(job_id) / "train.log").read_text()[-3000:]
            raise SystemExit(f"job {status.status}: {status.error}\n{log}")
        m = provider.metrics(job_id)
        assert m is not None

    per_1000 = m["seconds"] / (m["examples"] * args.epochs) * 1000
    print(f"base model: {m['base_model'] if args.base_model else 'tiny random model (2 layers, built here)'}")
    print(
        f"device: {m['device']} ({m['dtype']}, {m['threads']} threads), LoRA rank {settings.rank}, "
        f"batch {settings.batch_size} (pieces of {settings.max_batch_tokens or 'any number of'} tokens), "
        f"dropout {settings.dropout}, {args.epochs} epoch(s)"
    )
    print(f"examples: {m['examples']}, steps: {m['steps']}, tokens: {m['trained_tokens']:,}")
    print(f"training (model loaded to adapter saved): {m['seconds']:.1f} s = {per_1000:.1f} s per 1,000 examples")
    print(f"job wall time (process start, model load, training, save): {wall:.1f} s")
    losses = m["losses"]
    head, tail = losses[: min(10, len(losses))], losses[-min(10, len(losses)) :]
    print(f"loss: mean of the first 10 steps {sum(head) / len(head):.3f}, of the last 10 {sum(tail) / len(tail):.3f}")
    print(f"peak memory: process RSS {m['peak_rss_bytes'] / 2**20:,.0f} MiB", end="")
    gpu = m.get("peak_gpu_bytes")
    print(f", GPU {gpu / 2**20:,.0f} MiB" if gpu else "")
    print("command: python benchmarks/bench_lora.py " + shlex.join(sys.argv[1:]))
    print(
        f"lora: examples_per_s={m['examples_per_s']:.3f} step_s={m['step_s']:.2f} "
        f"first_step_s={m['first_step_s']:.1f} peak_rss_mb={m['peak_rss_bytes'] / 2**20:.0f}"
    )


if __name__ == "__main__":
    main()
