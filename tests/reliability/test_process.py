"""Process death and normal exit, through a wrapped client in a real child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from distillkit import DistillConfig, Distiller
from distillkit.testing import Simulator

_CHILD = textwrap.dedent(
    """
    import sys, time
    import openai
    import distillkit
    from distillkit import DistillConfig, Distiller

    base_url, path, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    distiller = Distiller(DistillConfig(path=path))
    client = distillkit.wrap(openai.OpenAI(base_url=base_url, api_key="sk-child", max_retries=0), distiller)
    topics = ["card delivery", "account closing", "refund policy", "mortgage rates", "travel insurance",
              "pin reset", "stock trading", "loan application", "currency exchange", "fraud report"]
    for i in range(n):
        text = f"Question {i}: tell me about {topics[i % len(topics)]} for customer {i * 7919}"
        client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": text}])
    if mode == "kill":
        assert distiller.flush(30)
        print("flushed", flush=True)
        time.sleep(120)  # killed here, without close()
    # mode "exit": leave at once; the interpreter's exit flushes the capture queue
    """
)


def captured_in_store(path: str) -> int:
    """Points in the store the child left (opened again: the child's lock is gone with it)."""
    distiller = Distiller(DistillConfig(path=path))
    try:
        return distiller.store.count(namespace="default")
    finally:
        distiller.close()


def run_child(simulator: Simulator, path: str, n: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, simulator.base_url, path, str(n), mode], stdout=subprocess.PIPE, text=True
    )


def test_sigkill_after_flushed_captures_keeps_exactly_those(simulator: Simulator, tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    child = run_child(simulator, path, 30, "kill")
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "flushed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    assert captured_in_store(path) == 30


def test_normal_exit_flushes_the_capture_queue(simulator: Simulator, tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    child = run_child(simulator, path, 30, "exit")
    assert child.wait(60) == 0
    assert captured_in_store(path) == 30
