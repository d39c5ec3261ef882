"""Publishing this process's counters where ``distillkit status`` adds up every process's.

Beside an embedded store each process writes one small file under ``<path>/counters/``: readable
while an application holds the store, and written by a process that does not own it too (files of
exited processes are folded into one now and then). With a server store the counters are store
records. Each :class:`~distillkit.Distiller` saves under its own instance name, so processes
never overwrite each other's.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillkit.errors import StoreError
from distillkit.state import (
    FOLD_AFTER,
    STATS_KIND,
    fold_published_stats,
    merge_stats,
    published_stats,
    saved_stats,
)
from distillkit.stats import NamespaceStats, Stats
from distillkit.store._files import make_private_dir, write_json_atomic

if TYPE_CHECKING:
    from distillkit.store.base import Store

__all__ = ["CounterPublisher"]

logger = logging.getLogger("distillkit")


class CounterPublisher:
    """Saves one Distiller's counters, and adds up the counters every process saved.

    Args:
        stats: the live counters of this Distiller.
        folder: where processes sharing an embedded store folder publish their files; None: the
            counters are records of the store (a server store).
        store: returns the store (called on each save, so a store opened lazily works).
        store_failed: told when saving the counters as store records failed (the store is reopened).
    """

    def __init__(
        self,
        stats: Stats,
        folder: Path | None,
        store: Callable[[], Store],
        store_failed: Callable[[BaseException, Store], Any],
    ) -> None:
        self._stats = stats
        self.folder = folder
        self._store = store
        self._store_failed = store_failed
        self.after_fork()

    def after_fork(self) -> None:
        """Start a new instance name (a forked child's counters are its own) and save on next call."""
        self._instance = uuid.uuid4().hex[:12]
        self._saved_at = time.monotonic()
        self._fold_at = 0.0  # when to fold exited processes' counters files next

    def save(self, *, every: float = 0.0) -> None:
        """Save the counters, unless they were saved less than ``every`` seconds ago."""
        if time.monotonic() - self._saved_at < every:
            return
        self._saved_at = time.monotonic()
        snapshot = self._stats.snapshot()
        if self.folder is not None:
            if not snapshot:
                return
            make_private_dir(self.folder)
            write_json_atomic(
                self.folder / f"{self._instance}.json",
                {
                    "pid": os.getpid(),
                    "saved_at": time.time(),
                    "namespaces": {ns: counters.as_dict() for ns, counters in snapshot.items()},
                },
            )
            if time.monotonic() >= self._fold_at:  # exited processes' files, now and then
                self._fold_at = time.monotonic() + FOLD_AFTER
                fold_published_stats(self.folder, keep=f"{self._instance}.json")
            return
        for ns, counters in snapshot.items():
            self._store().put_record(STATS_KIND, f"{ns}:{self._instance}", {"namespace": ns, **counters.as_dict()})

    def after_batch(self) -> None:
        """After each capture batch, stored or dropped: publish the counters file now and then."""
        if self.folder is not None:
            try:
                self.save(every=5.0)
            except OSError as exc:
                logger.warning("distillkit could not publish its counters: %s", exc)

    def after_store(self, store: Store) -> None:
        """After each stored capture batch: save the counters as store records now and then."""
        if self.folder is not None:
            return  # published by after_batch, without the store
        try:
            self.save(every=5.0)
        except StoreError as exc:  # the points are stored; only the counters wait for next time
            logger.warning("distillkit could not save its counters: %s", exc)
            self._store_failed(exc, store)

    def totals(self, store: Store | None = None) -> dict[str, NamespaceStats]:
        """The counters every process saved, by namespace, added up.

        Reads the counter files without opening the store; ``store`` adds the records of a server store.
        """
        sources = []
        if self.folder is not None:
            sources.append(published_stats(self.folder))
        if store is not None:
            sources.append(saved_stats(store))
        return merge_stats(*sources)
