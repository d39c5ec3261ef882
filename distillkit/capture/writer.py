"""The capture writer: a bounded in-memory queue drained in batches by one background thread.

The request path only appends to the queue (never blocks, never does I/O). When the queue is
full the oldest entry is dropped, with a warning and a counter. ``flush()`` waits until what
was queued before it is written; the interpreter's exit flushes too.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["CaptureWriter"]

logger = logging.getLogger("distillkit")

#: Seconds without work after which the writer thread ends (a new one starts on the next capture).
IDLE_EXIT_S = 1.0

T = TypeVar("T")


class CaptureWriter(Generic[T]):
    """Queue items and hand them to ``sink`` in batches, off the caller's thread.

    Args:
        sink: called from the writer thread with a batch; an exception is logged and the batch
            reported to ``on_drop`` (the caller never sees it).
        max_queue: entries kept at most; the oldest is dropped beyond it.
        batch_size: entries handed to ``sink`` at once, at most.
        on_drop: called with each dropped item (queue full or failed sink).
    """

    def __init__(
        self,
        sink: Callable[[Sequence[T]], None],
        *,
        max_queue: int = 10_000,
        batch_size: int = 64,
        on_drop: Callable[[T, str], None] | None = None,
        after_batch: Callable[[], None] | None = None,
        name: str = "distillkit-capture",
    ) -> None:
        self._sink = sink
        self._batch_size = batch_size
        self._on_drop = on_drop
        self._queue: collections.deque[T] = collections.deque()
        self._max_queue = max_queue
        self._cond = threading.Condition()
        self._submitted = 0
        self._finished = 0  # written or dropped
        self._thread: threading.Thread | None = None
        self._closed = False
        self._name = name
        self._warned_full = False
        self._after_batch = after_batch
        self._exit_hook = False

    def submit(self, item: T) -> None:
        """Queue one item; never blocks. Drops the oldest entry when the queue is full."""
        dropped: T | None = None
        with self._cond:
            if self._closed:
                dropped = item
            else:
                if len(self._queue) >= self._max_queue:
                    dropped = self._queue.popleft()
                    self._finished += 1
                self._queue.append(item)
                self._submitted += 1
                # is_alive, not None: a forked child has the parent's Thread object, not its thread
                if self._thread is None or not self._thread.is_alive():
                    self._start()
                self._cond.notify()
        if dropped is not None:
            self._drop(dropped, "capture queue full" if not self._closed else "capture writer closed")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written or dropped. False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            while self._finished < target:
                if self._thread is None or not self._thread.is_alive():
                    return not self._queue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining if remaining is not None else 0.5)
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush, then stop the writer thread. Later submissions are dropped."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def after_fork(self) -> None:
        """In a forked child: start empty, with fresh locks; the thread starts on the next submit.

        What was queued at the fork belongs to the parent, whose own writer stores it.
        """
        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._submitted = self._finished = 0
        self._thread = None

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if self._exit_hook:
            return
        self._exit_hook = True
        # Flush at interpreter exit without keeping the writer alive through the atexit table.
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            writer = ref()
            if writer is not None:
                writer.close(timeout=10.0)

        atexit.register(close_at_exit)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    if not self._cond.wait(IDLE_EXIT_S) and not self._queue and not self._closed:
                        # Idle: end the thread (the next submit starts another), so that a thread
                        # waiting for work never keeps a Distiller nobody closed alive for ever.
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
                if not self._queue and self._closed:
                    return
                batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
            try:
                self._sink(batch)
            except Exception as exc:
                # An error already reported where it arose (a store held by another process) is
                # not logged again for every batch; the drops are counted all the same.
                log = logger.debug if getattr(exc, "reported", False) else logger.warning
                log("distillkit could not store %d captured interaction(s): %s", len(batch), exc)
                for item in batch:
                    self._drop(item, f"store error: {exc}")
            if self._after_batch is not None:
                try:
                    self._after_batch()
                except Exception:
                    logger.warning("distillkit after_batch hook failed", exc_info=True)
            with self._cond:
                self._finished += len(batch)
                self._cond.notify_all()

    def _drop(self, item: T, reason: str) -> None:
        if reason == "capture queue full" and not self._warned_full:
            self._warned_full = True  # once, not once per request under load
            logger.warning("distillkit capture queue is full (%d); dropping the oldest entries", self._max_queue)
        if self._on_drop is not None:
            try:
                self._on_drop(item, reason)
            except Exception:
                logger.warning("distillkit on_drop hook failed", exc_info=True)
