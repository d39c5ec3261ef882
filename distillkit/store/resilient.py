"""The Distiller's handle on its store: opened on first use, reopened after a failure.

A store that fails (a folder deleted, replaced or closed underneath, a server gone away) is
closed, and opened again on first use after a backoff that doubles after each failed reopen,
so that capture and routing resume once it is back, without a restart. A store given by the
caller is never closed nor reopened here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from distillkit.errors import StoreError, StoreLockedError
from distillkit.store.base import Store

__all__ = ["ResilientStore"]

logger = logging.getLogger("distillkit")

#: Stores a forked child let go of: kept referenced so that their finalizers never run in the child.
_ABANDONED: list[Store] = []


class ResilientStore:
    """Opens the store on first use and reopens it after a failure (see the module docstring).

    Args:
        opener: builds the store; raises :class:`StoreError` while it cannot.
        store: a store given by the caller: used as it is, never reopened.
        backoff: ``(first, most)`` seconds to wait before reopening a store that failed.
        lock: the lock held while opening (shared with the owner's other lazily built parts).
    """

    def __init__(
        self,
        opener: Callable[[], Store],
        store: Store | None = None,
        *,
        backoff: tuple[float, float] = (1.0, 60.0),
        lock: threading.RLock | None = None,
    ) -> None:
        self._opener = opener
        self._store = store
        self._owned = store is None  # only a store opened here can be reopened here
        self._lock = lock if lock is not None else threading.RLock()
        self._retry_at = 0.0
        self._first, self._most = backoff
        self._backoff = self._first
        #: The current failure was logged here already (callers then log it at debug level only).
        self._reported = False
        self._last_error: StoreError | None = None
        self._closed = False

    @property
    def current(self) -> Store | None:
        """The store if it is open now (never opens it)."""
        return self._store

    def get(self) -> Store:
        """The store, opened on first use. Raises StoreError while it cannot be opened.

        A store that cannot be opened is reported once, at the first failure, with what to do;
        until it opens again, the errors raised here carry ``reported = True``, so that callers
        (the router, the capture writer) do not log them again on every request.
        """
        if self._store is None:
            with self._lock:
                if self._closed:
                    closed = StoreError("the Distiller was closed; its store is not reopened")
                    closed.reported = True  # type: ignore[attr-defined]  # not a failure to log per call
                    raise closed
                if self._store is None:
                    if time.monotonic() < self._retry_at:
                        error = StoreError(f"the store is unavailable ({self._last_error}); retrying later")
                        error.reported = True  # type: ignore[attr-defined]
                        raise error
                    try:
                        self._store = self._opener()
                    except StoreError as exc:
                        self._schedule_reopen()
                        self._last_error = exc
                        if not self._reported:
                            self._reported = True
                            self._report(exc)
                        exc.reported = True  # type: ignore[attr-defined]
                        raise
                    if self._reported:
                        logger.warning("distillkit: the store is open again; capture and routing resume")
                    self._reported = False
                    self._backoff = self._first
        return self._store

    @staticmethod
    def _report(exc: StoreError) -> None:
        if isinstance(exc, StoreLockedError):
            logger.warning(
                "distillkit: %s This process answers every request through the teacher; its captures "
                "are counted as dropped (see `distillkit status`) and it tries to open the store again "
                "now and then.",
                exc,
            )
        else:
            logger.warning(
                "distillkit: the store cannot be opened (%s); the teacher answers, captures are counted "
                "as dropped, and it is opened again later",
                exc,
            )

    def release(self, timeout: float = 10.0) -> None:
        """Close our store (it is opened again on next use): before ``fork``, so that a child can own it."""
        if not self._owned or not self._lock.acquire(timeout=timeout):
            return
        try:
            store, self._store = self._store, None
            if store is not None:
                try:
                    store.close()
                except Exception as exc:
                    logger.warning("distillkit could not release the store before fork: %s", exc)
        finally:
            self._lock.release()

    def after_fork(self, lock: threading.RLock) -> None:
        """In a forked child: forget the parent's store (never closing it) and open our own on use."""
        store, self._store = self._store, None
        if store is not None and self._owned:
            abandon = getattr(store, "abandon", None)
            if abandon is not None:
                abandon()
            else:  # e.g. a server client: its connections belong to the parent; never close them here
                _ABANDONED.append(store)
        elif store is not None:
            self._store = store  # given by the caller: theirs to manage
        self._lock = lock
        self._retry_at = 0.0
        self._backoff = self._first
        self._reported = False
        self._last_error = None

    def _schedule_reopen(self) -> None:
        """Wait before the next open, longer after each failure (under ``_lock``)."""
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._most)

    def failed(self, exc: BaseException, failed: Store | None = None) -> None:
        """A store operation failed: close our store, so that it is reopened after a backoff.

        Args:
            exc: what the store raised; only a :class:`StoreError` counts.
            failed: the store object that raised, when known: a late failure of a store
                already replaced must not close its replacement.
        """
        if not isinstance(exc, StoreError) or not self._owned:
            return
        with self._lock:
            if failed is not None and failed is not self._store:
                return
            store, self._store = self._store, None
            if store is None:
                return
            logger.warning("distillkit: the store failed (%s); reopening it later", exc)
            self._reported = True  # that was the report; a failing reopen is not logged again
            self._last_error = exc
            self._schedule_reopen()
            try:
                store.close()
            except Exception as close_exc:  # it is broken already: releasing it is all we want
                logger.debug("distillkit: closing the failed store: %s", close_exc)

    def close(self) -> None:
        """Release the store if it is open; it is never opened again here."""
        with self._lock:
            self._closed = True
            store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except StoreError as exc:  # a folder deleted underneath: nothing left to release
                logger.warning("distillkit could not close the store cleanly: %s", exc)
