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

from distillkit.errors import StoreError
from distillkit.store.base import Store

__all__ = ["ResilientStore"]

logger = logging.getLogger("distillkit")


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

    @property
    def current(self) -> Store | None:
        """The store if it is open now (never opens it)."""
        return self._store

    def get(self) -> Store:
        """The store, opened on first use. Raises StoreError while it cannot be opened."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    if time.monotonic() < self._retry_at:
                        raise StoreError("the store failed recently; retrying soon")
                    try:
                        self._store = self._opener()
                    except StoreError:
                        self._schedule_reopen()
                        raise
                    if self._backoff != self._first:
                        logger.warning("distillkit: the store is back; capture and routing resume")
                    self._backoff = self._first
        return self._store

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
            self._schedule_reopen()
            try:
                store.close()
            except Exception as close_exc:  # it is broken already: releasing it is all we want
                logger.debug("distillkit: closing the failed store: %s", close_exc)

    def close(self) -> None:
        """Release the store if it is open."""
        if self._store is not None:
            try:
                self._store.close()
            except StoreError as exc:  # a folder deleted underneath: nothing left to release
                logger.warning("distillkit could not close the store cleanly: %s", exc)
