"""The training scheduler: a daemon thread that runs training rounds on a private ``schedule``.

Follows schedule's own advice for background execution (``docs/background-execution.rst``) with
two changes: a private :class:`schedule.Scheduler`, so that a program's own jobs on schedule's
module-level scheduler are never run (or cleared) by distillkit; and every job wrapped in
catch-and-log, because schedule lets a job's exception escape and that would end the thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import schedule

from distillkit.config import ENV
from distillkit.errors import ConfigError

__all__ = ["TrainingScheduler"]

logger = logging.getLogger("distillkit")

#: Longest sleep between checks: bounds the effect of a changed system clock on schedule's times.
_MAX_SLEEP_S = 60.0


class TrainingScheduler:
    """Runs ``job`` every ``every_s`` seconds in a daemon thread until :meth:`stop`.

    Args:
        job: what to run, typically :meth:`Trainer.tick <distillkit.training.Trainer.tick>`;
            an exception it raises is logged on the ``distillkit`` logger, never fatal.
        every_s: seconds between runs (fractions allowed).
        name: the thread's name.

    Raises:
        ConfigError: ``every_s`` is not positive.

    Example:
        >>> scheduler = TrainingScheduler(trainer.tick, every_s=3600)  # doctest: +SKIP
        >>> scheduler.start()  # doctest: +SKIP
        >>> scheduler.stop()  # doctest: +SKIP
    """

    def __init__(self, job: Callable[[], Any], *, every_s: float, name: str = "distillkit-training") -> None:
        if not isinstance(every_s, (int, float)) or not every_s > 0:
            raise ConfigError(
                f"{ENV.TRAIN_EVERY}={every_s!r}: a training interval must be positive to be scheduled.",
                variable=ENV.TRAIN_EVERY,
                fix="Use a positive duration such as 1h, or call train_now() instead of start().",
            )
        self.every_s = float(every_s)
        self.name = name
        self._scheduler = schedule.Scheduler()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.add(job, every_s=self.every_s)

    def add(self, job: Callable[[], Any], *, every_s: float) -> None:
        """Also run ``job`` every ``every_s`` seconds (for example, polling jobs in flight more often)."""
        # schedule's annotation says int, but it computes with timedelta: fractions work.
        self._scheduler.every(every_s).seconds.do(self._guarded, job)  # type: ignore[arg-type]

    @staticmethod
    def _guarded(job: Callable[[], Any]) -> None:
        try:
            job()
        except Exception:
            logger.exception("distillkit: scheduled training job %r failed", job)
        # Returning None on purpose: schedule cancels a job that returns schedule.CancelJob.

    @property
    def running(self) -> bool:
        """True while the thread runs and has not been asked to stop."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        """Start the thread (a no-op while it runs). The first run comes ``every_s`` after."""
        with self._lock:
            if self.running:
                return
            if self._thread is not None:  # stopping: let the previous thread end first
                self._thread.join()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop and wait for it (a job in progress finishes first). Idempotent.

        Args:
            timeout: seconds to wait for the thread at most (None: until it ends).
        """
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._scheduler.run_pending()
            idle = self._scheduler.idle_seconds
            # The event, not time.sleep: stop() wakes the thread at once.
            self._stop.wait(min(max(idle if idle is not None else _MAX_SLEEP_S, 0.0), _MAX_SLEEP_S))

    def __repr__(self) -> str:
        return f"TrainingScheduler(every_s={self.every_s:g}, running={self.running})"
