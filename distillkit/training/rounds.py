"""What a training round reports: :class:`TrainingRound`, and how one is made from a job's records."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from distillkit.state import HISTORY_KIND

if TYPE_CHECKING:
    from distillkit.store.base import Store
    from distillkit.training.providers import JobStatus

__all__ = ["ENDED", "RoundStatus", "TrainingRound", "describe", "failed", "from_history", "running"]

logger = logging.getLogger("distillkit")

RoundStatus = Literal["skipped", "started", "running", "succeeded", "failed", "cancelled", "rejected", "error"]

_IN_FLIGHT = frozenset({"started", "running"})
#: Round statuses of an ended job.
ENDED = frozenset({"succeeded", "failed", "cancelled", "rejected"})
_OUTCOME_STATUS: dict[str, RoundStatus] = {
    "succeeded": "succeeded",
    "failed": "failed",
    "timed_out": "failed",
    "cancelled": "cancelled",
    "rejected": "rejected",
}


@dataclass(frozen=True)
class TrainingRound:
    """What one training round did for one namespace.

    Attributes:
        namespace: the namespace.
        status: ``skipped`` (not enough new data, or another process is starting a job),
            ``started`` (a job was started now), ``running`` (a job is in flight),
            ``succeeded`` / ``failed`` / ``cancelled`` (the job ended; on success its points are
            flipped and its model is active), ``rejected`` (the job succeeded but its model fell
            short of the promotion floor on the held-out points: nothing flipped, nothing
            activated), ``error`` (the store or the provider failed; see ``reason``).
        job_id: the job's id, when there is one.
        model: the distilled model, once the job succeeded.
        examples: training examples in the job's file.
        dropped: captured records that could not be trained on.
        reason: why it was skipped, failed, rejected or errored; the latest progress while running.
        base_model: the model the job trains from.
        held_out: pending points kept out of the job for the promotion gate.
        evaluation: the candidate's evaluation on them, once done
            (:meth:`~distillkit.training.evaluation.Evaluation.as_record`).
    """

    namespace: str
    status: RoundStatus
    job_id: str | None = None
    model: str | None = None
    examples: int = 0
    dropped: int = 0
    reason: str | None = None
    base_model: str | None = None
    held_out: int = 0
    evaluation: dict[str, Any] | None = None

    @property
    def in_flight(self) -> bool:
        """True while the round's job has not ended."""
        return self.status in _IN_FLIGHT and self.job_id is not None


def running(ns: str, record: Mapping[str, Any], status: JobStatus, reason: str | None = None) -> TrainingRound:
    """The round of a job still in flight."""
    return TrainingRound(
        ns,
        "running",
        str(record["job_id"]),
        examples=int(record.get("examples") or 0),
        dropped=int(record.get("dropped") or 0),
        reason=reason or status.progress or status.status,
        base_model=record.get("base_model"),
        held_out=len(record.get("held_out") or []),
    )


def from_history(store: Store, ns: str, job_id: str) -> TrainingRound:
    """The round of an ended job, from its ``job_history`` record."""
    history = store.get_record(HISTORY_KIND, job_id)
    if history is None:
        return TrainingRound(ns, "error", job_id, reason=f"job {job_id} is neither in flight nor in the history")
    return from_history_record(ns, history)


def from_history_record(ns: str, history: Mapping[str, Any]) -> TrainingRound:
    """The round an ended job's history record describes."""
    outcome = str(history.get("outcome"))
    return TrainingRound(
        ns,
        _OUTCOME_STATUS.get(outcome, "failed"),
        str(history.get("job_id")),
        model=history.get("model"),
        examples=int(history.get("examples") or 0),
        dropped=int(history.get("dropped") or 0),
        reason=history.get("error"),
        base_model=history.get("base_model"),
        held_out=int(history.get("held_out") or 0),
        evaluation=history.get("evaluation"),
    )


def failed(ns: str, action: str, exc: BaseException, *, job_id: str | None = None) -> TrainingRound:
    """An ``error`` round (logged): the store or the provider failed."""
    logger.warning("distillkit: %s: could not %s (%s)", ns, action, describe(exc), exc_info=True)
    return TrainingRound(ns, "error", job_id, reason=f"could not {action}: {describe(exc)}")


def describe(exc: BaseException) -> str:
    """An exception's type and (shortened) message, for a log line or a round's reason."""
    text = str(exc)
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
