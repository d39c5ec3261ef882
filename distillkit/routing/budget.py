"""The error budget: route only where the student has been *measured* to answer as the teacher.

The user states the share of routed answers that may disagree with the teacher
(``DISTILLKIT_MAX_ERROR``, per namespace if they want). Every measured outcome is a
:class:`~distillkit.routing.labels.Label`: from the promotion gate's held-out points
(:mod:`distillkit.training.evaluation`), shadow checks and exploration. :class:`ErrorBudget` keeps
each namespace's labels (those of its active model: a new model starts from its own) and its
:class:`~distillkit.routing.acceptance.Acceptance`, fitted by
:func:`~distillkit.routing.acceptance.fit` (how: see that module).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from distillkit.routing.acceptance import CONFIDENCE, Acceptance, check_rate, fit, min_labels, upper_bound
from distillkit.routing.labels import Label, Signals, answer_class, answer_key
from distillkit.routing.novelty import fit_radius
from distillkit.state import ACCEPTANCE_KIND, LABELS_KIND

if TYPE_CHECKING:
    from distillkit.store.base import Store

__all__ = [
    "ACCEPTANCE_KIND",
    "CONFIDENCE",
    "LABELS_KIND",
    "MAX_LABELS",
    "Acceptance",
    "ErrorBudget",
    "Label",
    "Signals",
    "answer_class",
    "answer_key",
    "fit",
    "min_labels",
    "upper_bound",
]

#: Labels kept per namespace (the oldest go first).
MAX_LABELS = 1000

logger = logging.getLogger("distillkit")


class ErrorBudget:
    """Keeps each namespace's labels and fitted acceptance in the store's companion records.

    Reads are cached for ``ttl`` seconds (the request path reads, training and shadow checks
    write), so another process's labels are seen within that time.

    Args:
        store: returns the store.
        max_error: the default budget; :meth:`set_max_error` overrides it per namespace.
        confidence: of the bound.
        max_labels: labels kept per namespace.
    """

    def __init__(
        self,
        store: Callable[[], Store],
        *,
        max_error: float,
        confidence: float = CONFIDENCE,
        max_labels: int = MAX_LABELS,
        ttl: float = 5.0,
    ) -> None:
        check_rate("max_error", max_error)
        check_rate("confidence", confidence)
        self._store = store
        self.max_error = max_error
        self.confidence = confidence
        self.max_labels = max_labels
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Acceptance | None]] = {}
        # Held across a write and the refit that follows it: a refit that read the labels before
        # another thread's write must not save its older fit over the newer one.
        self._lock = threading.RLock()

    def acceptance(self, namespace: str) -> Acceptance | None:
        """The namespace's fitted acceptance (None when it has no labels yet)."""
        now = time.monotonic()
        cached = self._cache.get(namespace)
        if cached is not None and now - cached[0] <= self._ttl:
            return cached[1]
        raw = self._store().get_record(ACCEPTANCE_KIND, namespace)
        fitted = Acceptance.from_record(raw["fit"]) if raw and raw.get("fit") else None
        self._cache[namespace] = (now, fitted)
        return fitted

    def max_error_for(self, namespace: str) -> float:
        raw = self._store().get_record(ACCEPTANCE_KIND, namespace) or {}
        value = raw.get("max_error")
        return float(value) if isinstance(value, (int, float)) else self.max_error

    def set_max_error(self, namespace: str, max_error: float | None) -> Acceptance | None:
        """Set (or with None, clear) the namespace's own budget, and refit."""
        if max_error is not None:
            check_rate("max_error", max_error)
        with self._lock:
            store = self._store()
            raw = dict(store.get_record(ACCEPTANCE_KIND, namespace) or {})
            raw["max_error"] = max_error
            store.put_record(ACCEPTANCE_KIND, namespace, raw)
            return self.refit(namespace)

    def labels(self, namespace: str) -> list[Label]:
        raw = self._store().get_record(LABELS_KIND, namespace) or {}
        return [Label.from_compact(row) for row in raw.get("labels") or []]

    def add(self, namespace: str, labels: Iterable[Label]) -> Acceptance | None:
        """Keep new labels (the oldest beyond ``max_labels`` go) and refit the namespace."""
        new = [label.compact() for label in labels]
        if not new:
            return self.acceptance(namespace)
        with self._lock:
            store = self._store()
            raw = store.get_record(LABELS_KIND, namespace) or {}
            rows = [*(raw.get("labels") or []), *new][-self.max_labels :]
            store.put_record(LABELS_KIND, namespace, {"labels": rows})
            return self.refit(namespace)

    def restart(self, namespace: str, labels: Iterable[Label]) -> Acceptance | None:
        """A new model is active: its ``labels`` (the promotion gate's) replace the previous model's.

        Labels measure one student; a new model may answer better or worse, so the acceptance is
        fitted again from its own labels only (none: the configured rule decides until exploration
        and shadow checks have measured it). The out-of-distribution radius
        (:mod:`distillkit.routing.novelty`) is fitted again on the points the new model was trained on.
        """
        rows = [label.compact() for label in labels][-self.max_labels :]
        store = self._store()
        try:
            novelty = fit_radius(store, namespace)
        except Exception as exc:  # no deferral rather than no model: the rest still decides
            logger.warning("distillkit: %s: could not fit the out-of-distribution radius (%s)", namespace, exc)
            novelty = None
        with self._lock:
            store.put_record(LABELS_KIND, namespace, {"labels": rows})
            raw = dict(store.get_record(ACCEPTANCE_KIND, namespace) or {})
            raw["novelty"] = novelty.as_record() if novelty is not None else None
            store.put_record(ACCEPTANCE_KIND, namespace, raw)
            return self.refit(namespace)

    def refit(self, namespace: str) -> Acceptance | None:
        """Fit the namespace's acceptance to its labels again (None, and no fit kept, without labels)."""
        with self._lock:
            labels = self.labels(namespace)
            max_error = self.max_error_for(namespace)
            fitted = fit(labels, max_error=max_error, confidence=self.confidence) if labels else None
            store = self._store()
            raw = dict(store.get_record(ACCEPTANCE_KIND, namespace) or {})
            if fitted is not None:
                fitted = dataclasses.replace(fitted, novelty=raw.get("novelty"))
            raw["fit"] = fitted.as_record() if fitted is not None else None
            store.put_record(ACCEPTANCE_KIND, namespace, raw)
            self._cache[namespace] = (time.monotonic(), fitted)
        return fitted
