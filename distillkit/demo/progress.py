"""A training round's progress, shown while the real-student demo waits for it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ["TrainingProgress"]


class TrainingProgress:
    """Shows a training round's progress while ``train_now(wait=True)`` blocks.

    Reads the newest job folder of the LoRA provider every second: on a terminal, one line
    redrawn in place; otherwise a line every ``every`` seconds.
    """

    def __init__(self, provider: Any, out: TextIO, label: str, *, every: float = 15.0) -> None:
        self._provider = provider
        self._out = out
        self._label = label
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="distillkit-demo-progress", daemon=True)
        self._tty = bool(getattr(out, "isatty", lambda: False)())
        self.started = time.perf_counter()

    def __enter__(self) -> TrainingProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._tty:
            self._out.write("\r\x1b[K")
            self._out.flush()

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.started
        state = "preparing"
        work = Path(self._provider.work_dir)
        jobs = sorted(work.glob("distillkit-*"), key=lambda p: p.stat().st_mtime) if work.exists() else []
        if jobs:
            status = self._provider.poll(jobs[-1].name)
            state = status.progress or status.status
            if status.done and status.succeeded:
                state = "evaluating the candidate on held-out points"
        return f"  {self._label}: {state} ({elapsed:.0f} s)"

    def _loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(1.0):
            try:
                line = self._line()
            except Exception:  # progress is cosmetic: never let it break the round
                continue
            if self._tty:
                self._out.write("\r\x1b[K" + line)
                self._out.flush()
            elif time.perf_counter() - last >= self._every:
                self._out.write(line + "\n")
                self._out.flush()
                last = time.perf_counter()
