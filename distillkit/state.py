"""What distillkit keeps beside the captured points: the store's companion records, in one place.

Every kind of record, what it holds, and who writes it:

========================  ==================  ===============================================
kind                      key                 written by
========================  ==================  ===============================================
``model``                 namespace           :class:`ModelRegistry`: the active distilled model
``job``                   namespace           the trainer: the job in flight and its point ids
``job_history``           job id              the trainer: every ended job, with its outcome
                                              and the candidate's evaluation (promotion gate)
``holdout``               namespace           the trainer: the latest round's held-out ids
``labels``                namespace           the error budget: measured student outcomes
``acceptance``            namespace           the error budget: its fit, and max_error override
``shadow``                namespace:model     shadow checks: count and mean agreement
``demotion``              namespace           shadow checks: why a model was demoted
``namespace``             namespace           the capture sink: namespaces seen
``stats``                 namespace:instance  the Distiller: counters of each process
========================  ==================  ===============================================

State lives in the store, never only in memory, so that a restarted process (or another one
sharing a server store) carries on where this one stopped.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillkit.stats import NamespaceStats

if TYPE_CHECKING:
    from distillkit.store.base import Store

__all__ = [
    "ACCEPTANCE_KIND",
    "DEMOTION_KIND",
    "HISTORY_KIND",
    "HOLDOUT_KIND",
    "JOB_KIND",
    "LABELS_KIND",
    "MODEL_KIND",
    "NAMESPACE_KIND",
    "SHADOW_KIND",
    "STATS_KIND",
    "ActiveModel",
    "ModelRegistry",
    "fold_published_stats",
    "merge_stats",
    "published_stats",
    "saved_stats",
    "shadow_summaries",
]

MODEL_KIND = "model"
JOB_KIND = "job"
HISTORY_KIND = "job_history"
SHADOW_KIND = "shadow"
DEMOTION_KIND = "demotion"
NAMESPACE_KIND = "namespace"
STATS_KIND = "stats"
HOLDOUT_KIND = "holdout"
LABELS_KIND = "labels"
ACCEPTANCE_KIND = "acceptance"


@dataclass(frozen=True)
class ActiveModel:
    """A namespace's entry in the model registry."""

    namespace: str
    model: str
    base_model: str | None = None
    job_id: str | None = None
    trained_count: int = 0
    activated_at: float = 0.0
    threshold: float | None = None  # a calibrated threshold, when one was saved
    #: Activated below the promotion floor because no model served the namespace: it routes only
    #: where its measured labels certify a region, and is asked every refused request meanwhile.
    probation: bool = False

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ActiveModel:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in record.items() if k in known})


class ModelRegistry:
    """Namespace → active distilled model, kept in the store's ``model`` records.

    Reads are cached for ``ttl`` seconds so that the request path almost never touches the
    store, while a model activated by another process (a ``distillkit train`` worker) is seen
    within that time.
    """

    KIND = MODEL_KIND

    def __init__(self, store: Callable[[], Store], ttl: float = 5.0) -> None:
        self._store = store
        self._ttl = ttl
        self._cache: dict[str, ActiveModel] = {}
        self._loaded_at = -float("inf")
        self._lock = threading.Lock()

    @property
    def fresh(self) -> bool:
        """Whether :meth:`get` answers from memory now (no store read, nor a first store open)."""
        return time.monotonic() - self._loaded_at <= self._ttl

    def get(self, namespace: str) -> ActiveModel | None:
        if time.monotonic() - self._loaded_at > self._ttl:
            self.refresh()
        return self._cache.get(namespace)

    def all(self) -> dict[str, ActiveModel]:
        self.refresh()
        return dict(self._cache)

    def refresh(self) -> None:
        with self._lock:
            self._loaded_at = time.monotonic()  # also on failure: do not hammer a broken store
            records_ = self._store().list_records(self.KIND)
            self._cache = {ns: ActiveModel.from_record({**r, "namespace": ns}) for ns, r in records_.items()}

    def activate(self, model: ActiveModel) -> None:
        self._store().put_record(self.KIND, model.namespace, asdict(model))
        with self._lock:
            self._cache[model.namespace] = model

    def deactivate(self, namespace: str) -> None:
        self._store().delete_record(self.KIND, namespace)
        with self._lock:
            self._cache.pop(namespace, None)

    def set_threshold(self, namespace: str, threshold: float | None) -> None:
        current = self.get(namespace)
        if current is not None:
            self.activate(replace(current, threshold=threshold))

    @staticmethod
    def read(store: Store, namespace: str) -> ActiveModel | None:
        """The namespace's active model read from ``store`` itself, bypassing any cache."""
        raw = store.get_record(MODEL_KIND, namespace)
        return ActiveModel.from_record({**raw, "namespace": namespace}) if raw else None


def shadow_summaries(store: Store) -> dict[str, dict[str, dict[str, Any]]]:
    """Namespace → model → ``{"samples", "mean_agreement"}`` of its shadow checks."""
    out: defaultdict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for record in store.list_records(SHADOW_KIND).values():
        if isinstance(record.get("namespace"), str) and isinstance(record.get("model"), str):
            out[record["namespace"]][record["model"]] = {
                "samples": record.get("samples", 0),
                "mean_agreement": record.get("mean_agreement"),
            }
    return dict(out)


def saved_stats(store: Store) -> dict[str, NamespaceStats]:
    """Namespace → the counters every process saved, added up."""
    totals: dict[str, NamespaceStats] = {}
    for record in store.list_records(STATS_KIND).values():
        ns = record.get("namespace")
        if isinstance(ns, str):
            totals[ns] = _merge(totals.get(ns, NamespaceStats()), record)
    return totals


def published_stats(folder: Path) -> dict[str, NamespaceStats]:
    """Namespace → the counters every process published in ``folder`` (one JSON file each), added up.

    Processes sharing an embedded store publish their counters there rather than in the store,
    so that a process that does not own the store (another worker) counts too, and so that
    ``distillkit status`` can read them while an application holds the store.
    """
    totals: dict[str, NamespaceStats] = {}
    try:
        files = sorted(folder.glob("*.json"))
    except OSError:
        return totals
    archive = _read_json(folder / ARCHIVE)
    folded = set(archive.get("folded") or ())
    for file in files:
        if file.name in folded:
            continue  # counted in the archive, not yet removed
        data = archive if file.name == ARCHIVE else _read_json(file)
        for ns, record in (data.get("namespaces") or {}).items() if isinstance(data, dict) else ():
            if isinstance(ns, str) and isinstance(record, dict):
                totals[ns] = _merge(totals.get(ns, NamespaceStats()), record)
    return totals


#: The counters of processes that have exited, folded into one file by :func:`fold_published_stats`.
ARCHIVE = "archive.json"
#: A counters file is folded only once its process is gone and it is this old (seconds).
FOLD_AFTER = 3600.0


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing, being replaced, or not ours
    return data if isinstance(data, dict) else {}


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process
    return True


def fold_published_stats(folder: Path, *, keep: str = "", older_than: float = FOLD_AFTER) -> int:
    """Fold the counters files of processes that have exited into :data:`ARCHIVE`, so that the
    folder holds a file per live process, not one per process ever started; returns how many.

    Under an exclusive lock on ``folder/.lock`` (another process folding now: nothing is done).
    A file is folded when its process is gone and it was saved more than ``older_than`` seconds
    ago. The archive names the files it holds, and readers skip them, so a process that stops
    between writing the archive and removing them never counts them twice.
    """
    import fcntl
    import os

    from distillkit.store._files import write_json_atomic

    try:
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        archive = _read_json(folder / ARCHIVE)
        folded = {str(n) for n in archive.get("folded") or ()}
        totals: dict[str, NamespaceStats] = {}
        for ns, record in (archive.get("namespaces") or {}).items():
            if isinstance(ns, str) and isinstance(record, dict):
                totals[ns] = _merge(NamespaceStats(), record)
        gone: list[Path] = []
        now = time.time()
        for file in sorted(folder.glob("*.json")):
            if file.name in (ARCHIVE, keep) or file.name in folded:
                continue
            data = _read_json(file)
            pid = data.get("pid")
            if not isinstance(pid, int) or _alive(pid) or now - float(data.get("saved_at") or now) < older_than:
                continue
            for ns, record in (data.get("namespaces") or {}).items():
                if isinstance(ns, str) and isinstance(record, dict):
                    totals[ns] = _merge(totals.get(ns, NamespaceStats()), record)
            gone.append(file)
        if not gone:
            return 0
        names = {n for n in folded if (folder / n).exists()} | {f.name for f in gone}
        write_json_atomic(
            folder / ARCHIVE,
            {"folded": sorted(names), "namespaces": {ns: c.as_dict() for ns, c in totals.items()}},
        )
        for file in gone:
            file.unlink(missing_ok=True)
        return len(gone)
    finally:
        os.close(fd)


def merge_stats(*sources: Mapping[str, NamespaceStats]) -> dict[str, NamespaceStats]:
    """Add up several namespace → counters mappings."""
    totals: dict[str, NamespaceStats] = {}
    for source in sources:
        for ns, counters in source.items():
            totals[ns] = _merge(totals.get(ns, NamespaceStats()), counters.as_dict())
    return totals


def _merge(total: NamespaceStats, saved: Mapping[str, Any]) -> NamespaceStats:
    """Add one saved counter record to a running total."""
    out = dataclasses.replace(total)
    for counter in dataclasses.fields(NamespaceStats):
        if counter.name != "tokens":
            setattr(out, counter.name, getattr(out, counter.name) + (saved.get(counter.name) or 0))
    tokens = {m: dict(t) for m, t in out.tokens.items()}
    for model, counts in (saved.get("tokens") or {}).items():
        slot = tokens.setdefault(model, {"prompt": 0, "completion": 0})
        for key in ("prompt", "completion"):
            slot[key] += counts.get(key, 0)
    out.tokens = tokens
    return out
