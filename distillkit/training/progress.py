"""A training round's progress while something waits for it: one line redrawn in a terminal, log lines otherwise.

``train_now(wait=True)``, ``distillkit train --wait`` and the demo show the same line: the
namespace, the job's phase (loading, tokenising, training step/total with loss, examples per
second and ETA, converting, registering, the promotion gate) and the time waited.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

__all__ = ["ProgressLine"]

logger = logging.getLogger("distillkit")


class ProgressLine:
    """One status line: redrawn in place on a terminal; elsewhere a plain line when the phase
    changes and at most every ``every`` seconds.

    Args:
        out: the stream to write to. None: standard error when it is a terminal, else the
            ``distillkit`` logger at INFO.
        every: seconds between two plain lines of the same phase.
    """

    def __init__(self, out: TextIO | None = None, *, every: float = 15.0) -> None:
        self._log = out is None and not sys.stderr.isatty()
        self._out = out if out is not None else sys.stderr
        self._tty = bool(getattr(self._out, "isatty", lambda: False)())
        self._every = every
        self._started = time.monotonic()
        self._last_logged = 0.0
        self._last_phase: str | None = None
        self._drawn = False

    def show(self, text: str) -> None:
        """Show ``text`` (with the seconds waited so far)."""
        line = f"{text} ({time.monotonic() - self._started:.0f} s)"
        if self._tty:
            self._out.write("\r\x1b[K" + line)
            self._out.flush()
            self._drawn = True
            return
        phase = text.split(" step ")[0].split(",")[0]
        now = time.monotonic()
        if phase != self._last_phase or now - self._last_logged >= self._every:
            if self._log:
                logger.info("distillkit: %s", line)
            else:
                self._out.write(f"  {line}\n")
                self._out.flush()
            self._last_phase, self._last_logged = phase, now

    def close(self) -> None:
        """Clear the terminal line."""
        if self._drawn:
            self._out.write("\r\x1b[K")
            self._out.flush()
            self._drawn = False
