"""What ``Distiller.status()`` and ``distillkit status`` report per namespace.

Everything comes from the store, so every process's work counts: points stored, indexed and
pending, the active model and its threshold, the job in flight, the last training rounds with
the promotion gate's verdicts, shadow checks and demotions, the error budget's fit, and the
counters every process saved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from distillkit.state import DEMOTION_KIND, HISTORY_KIND, NAMESPACE_KIND, ModelRegistry, shadow_summaries
from distillkit.stats import NamespaceStats

if TYPE_CHECKING:
    from distillkit.routing.acceptance import Acceptance
    from distillkit.routing.budget import ErrorBudget
    from distillkit.routing.router import Router
    from distillkit.store.base import Store

__all__ = ["status_report"]


def status_report(
    store: Store,
    *,
    registry: ModelRegistry,
    router: Router,
    budget: ErrorBudget | None,
    jobs: Callable[[], Mapping[str, Any]],
    totals: Callable[[Store], Mapping[str, NamespaceStats]],
    rounds_shown: int,
) -> dict[str, dict[str, Any]]:
    """The report, by namespace.

    Args:
        store: where points and records are read.
        registry: the active models.
        router: says which threshold applies.
        budget: the error budget (None: off).
        jobs: the jobs in flight, by namespace.
        totals: every process's saved counters, by namespace.
        rounds_shown: ended training rounds (newest last) shown per namespace.
    """
    demotions = store.list_records(DEMOTION_KIND)
    shadows = shadow_summaries(store)
    in_flight = jobs()
    counted = totals(store)
    rounds: dict[str, list[dict[str, Any]]] = {}
    for job_id, entry in sorted(
        store.list_records(HISTORY_KIND).items(), key=lambda item: float(item[1].get("finished_at") or 0.0)
    ):
        rounds.setdefault(str(entry.get("namespace")), []).append(_round_summary(job_id, entry))
    namespaces = set(store.list_records(NAMESPACE_KIND)) | set(registry.all()) | set(demotions)
    report = {}
    for ns in sorted(namespaces | set(counted) | set(in_flight)):
        indexed = store.count(namespace=ns, indexed=True)
        stored = store.count(namespace=ns)
        active = registry.get(ns)
        counters = counted.get(ns, NamespaceStats())
        report[ns] = {
            "stored": stored,
            "indexed": indexed,
            "pending": stored - indexed,
            "active_model": active.model if active else None,
            "probation": bool(active and active.probation),
            "threshold": router.threshold(None, active),
            "job": in_flight.get(ns),
            "shadow": shadows.get(ns, {}),
            "demoted": demotions.get(ns),
            "rounds": rounds.get(ns, [])[-rounds_shown:],
            "budget": _budget_summary(budget.acceptance(ns) if budget is not None else None, rounds.get(ns, [])),
            **counters.as_dict(),
        }
    return report


#: What ``status()`` shows of a round's evaluation.
_EVALUATION_SHOWN = (
    "agreement",
    "n",
    "floor",
    "verdict",
    "scope",
    "held_out",
    "failed",
    "bounds",
    "fields",
    "reason",
    "repeating",
)


def _round_summary(job_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """One ended training round as ``status()`` shows it: outcome and the promotion gate's verdict."""
    evaluation = entry.get("evaluation") or None
    return {
        "job_id": job_id,
        "status": entry.get("status"),
        "model": entry.get("model") or entry.get("candidate"),
        "finished_at": entry.get("finished_at"),
        "held_out": entry.get("held_out", 0),
        "evaluation": ({k: evaluation.get(k) for k in _EVALUATION_SHOWN} if isinstance(evaluation, dict) else None),
        "error": entry.get("error"),
    }


def _budget_summary(acceptance: Acceptance | None, rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The error budget's fit as ``status()`` shows it (``rounds``: the namespace's ended rounds)."""
    if acceptance is None:
        return None
    return {
        "status": acceptance.status,
        "max_error": acceptance.max_error,
        "threshold": acceptance.threshold,
        "labels": acceptance.labels,
        "accepted": acceptance.accepted,
        "errors": acceptance.errors,
        "bound": acceptance.bound,
        "blocked_classes": len(acceptance.blocked),
        "reason": acceptance.reason,
        "signal": acceptance.signal,
        "min_confidence": acceptance.min_confidence,
        "novelty": acceptance.novelty,
        "guards": guards(acceptance, _repeating(rounds)),
    }


def _repeating(rounds: list[dict[str, Any]]) -> bool | None:
    """Whether the latest evaluated round's held-out teacher answers repeated (None: no such round)."""
    for entry in reversed(rounds):
        evaluation = entry.get("evaluation") or {}
        if evaluation.get("repeating") is not None:
            return bool(evaluation["repeating"])
    return None


def guards(acceptance: Acceptance, repeating: bool | None) -> list[str]:
    """Which guards decide the namespace's routes, in words (``distillkit status`` prints them).

    ``repeating``: whether the namespace's teacher answers repeat (None: not measured yet).
    """
    out = []
    if acceptance.certified:
        if acceptance.signal != "confidence" and acceptance.threshold is not None:
            out.append(f"similarity >= {acceptance.threshold:.3f} certified")
        if acceptance.signal != "similarity" and acceptance.min_confidence is not None:
            out.append(f"student confidence >= {acceptance.min_confidence:.3f} certified")
    elif acceptance.status == "fallback":
        out.append("not certified yet: the configured threshold decides; every refused request is explored")
    else:
        out.append("closed: nothing routes until new labels show otherwise; every refused request is explored")
    novelty = acceptance.novelty
    if novelty:
        out.append(f"never-seen traffic deferred (mean distance to {novelty['k']} nearest > {novelty['radius']:.3f})")
    if repeating:
        out.append("answers repeat: the cross-check compares the student's with its neighbours'")
    elif repeating is not None:
        out.append("answers never repeat here: cross-check inactive, confidence and the gate decide")
    return out
