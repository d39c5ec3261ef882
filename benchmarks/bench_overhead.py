"""What interception adds to a call on the teacher path (routing off), against the raw SDK.

Both clients talk to the simulator over real HTTP, interleaved call by call in one run (in shuffled order), so
drift in the machine's speed hits both alike. "raw" calls the SDK's own, unpatched
``Completions.create``; "wrapped" goes through distillkit. Two wrapped variants: capture off
(interception alone) and capture on (plus handing the answer to the background writer, whose
work competes for the GIL in this one process).

    python benchmarks/bench_overhead.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from openai import OpenAI
from openai.resources.chat.completions import Completions

import distillkit
from distillkit import DistillConfig, Distiller, intercept

SERVE = (
    "from distillkit.testing import Simulator; import time; "
    "print(Simulator().start().base_url, flush=True); time.sleep(3600)"
)

MESSAGES = [
    {"role": "system", "content": "You are a bank assistant."},
    {"role": "user", "content": "Where is my card?"},
]


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall time and the calling thread's CPU time of one call."""
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per variant (default 2000)")
    args = parser.parse_args()

    # The simulator runs in its own process so that its server threads do not compete with the
    # measured calls for this process's GIL.
    server = subprocess.Popen([sys.executable, "-c", SERVE], stdout=subprocess.PIPE, text=True)
    base_url = server.stdout.readline().strip()  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as folder:
        distiller = Distiller(DistillConfig(path=folder, route=False))
        raw_client = OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
        off = distillkit.wrap(raw_client.copy(), distiller, capture=False)
        on = distillkit.wrap(raw_client.copy(), distiller)
        sdk_create = intercept._originals[(Completions, "create")]  # the SDK's own function

        variants: dict[str, Callable[[], Any]] = {
            "raw SDK": lambda: sdk_create(raw_client.chat.completions, model="gpt-4.1", messages=MESSAGES),
            "wrapped, capture off": lambda: off.chat.completions.create(model="gpt-4.1", messages=MESSAGES),
            "wrapped, capture on": lambda: on.chat.completions.create(model="gpt-4.1", messages=MESSAGES),
        }
        for fn in variants.values():  # warm up connections, the embedder and the store
            for _ in range(50):
                fn()
        distiller.flush()
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        order = list(variants)
        rng = random.Random(7)
        for _ in range(args.calls):
            rng.shuffle(order)  # no variant always runs first (or right after another)
            for name in order:
                samples[name].append(timed(variants[name]))
        distiller.close()
    server.kill()

    def medians(name: str) -> tuple[float, float]:
        return statistics.median(w for w, _ in samples[name]), statistics.median(c for _, c in samples[name])

    raw_wall, raw_cpu = medians("raw SDK")
    print(f"{args.calls} calls per variant, interleaved, simulator in another process, Python {sys.version.split()[0]}")
    print("wall: the call as the caller waits for it; cpu: the calling thread's own CPU time (no network wait)")
    print(f"{'variant':<22}{'wall ms':>9}{'added':>8}{'ratio':>7}{'cpu ms':>9}{'added':>8}{'ratio':>7}")
    for name in samples:
        wall, cpu = medians(name)
        print(
            f"{name:<22}{wall * 1e3:>9.3f}{(wall - raw_wall) * 1e3:>8.3f}{wall / raw_wall:>7.3f}"
            f"{cpu * 1e3:>9.3f}{(cpu - raw_cpu) * 1e3:>8.3f}{cpu / raw_cpu:>7.3f}"
        )
    print("reproduce: python benchmarks/bench_overhead.py --calls", args.calls)


if __name__ == "__main__":
    main()
