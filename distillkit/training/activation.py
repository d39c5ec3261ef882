"""Where a trained model becomes active: a job that ended is concluded.

On success, exactly the points the job trained on become ``indexed=True`` (their ids were
snapshotted when the job started; points captured meanwhile wait for the next round), and the
namespace's registry entry names the new model. Whatever the outcome, the job's record moves to
the history, last: until then, a crash only means "poll it again".
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from distillkit.state import HISTORY_KIND, JOB_KIND, ActiveModel, ModelRegistry

if TYPE_CHECKING:
    from distillkit.store.base import Store
    from distillkit.training.providers import JobStatus

__all__ = ["FLIP_BATCH", "activate", "conclude"]

#: Points flipped per store call.
FLIP_BATCH = 1000


def conclude(
    store: Store,
    registry: ModelRegistry,
    ns: str,
    record: Mapping[str, Any],
    status: JobStatus,
    outcome: str,
    *,
    flip_batch: int = FLIP_BATCH,
    evaluation: Mapping[str, Any] | None = None,
    probation: bool = False,
) -> dict[str, Any]:
    """Flip the points (on success), activate the model, move the record to the history.

    Called under the namespace's lease, with the job's record still current. Returns the
    history record. ``outcome`` ``"rejected"``: the job succeeded but its model failed the
    promotion gate (``evaluation``); nothing is flipped or activated. ``probation``: the model is
    activated on probation (see :class:`~distillkit.state.ActiveModel`). Held-out points are never
    flipped (they are not among the job's points).
    """
    job_id = str(record["job_id"])
    point_ids = [str(i) for i in record.get("point_ids") or []]
    if outcome == "succeeded":
        assert status.model is not None
        for start in range(0, len(point_ids), flip_batch):
            chunk = point_ids[start : start + flip_batch]
            store.set_payload(chunk, {"indexed": True, "distilled_model": status.model, "job_id": job_id})
        activate(store, registry, ns, record, status.model, len(point_ids), probation=probation)
    history = {k: v for k, v in record.items() if k not in ("point_ids", "held_out", "evaluation_error")}
    history.update(
        points=len(point_ids),
        held_out=len(record.get("held_out") or []),
        status="rejected" if outcome == "rejected" else status.status,
        outcome=outcome,
        model=status.model if outcome == "succeeded" else None,
        candidate=status.model,
        error=status.error,
        trained_tokens=status.trained_tokens,
        finished_at=time.time(),
        evaluation=dict(evaluation) if evaluation is not None else None,
        probation=probation and outcome == "succeeded",
    )
    store.put_record(HISTORY_KIND, job_id, history)
    store.delete_record(JOB_KIND, ns)  # last: until here, a crash means "poll it again"
    return history


def activate(
    store: Store,
    registry: ModelRegistry,
    ns: str,
    record: Mapping[str, Any],
    model: str,
    trained: int,
    *,
    probation: bool = False,
) -> None:
    """Make ``model`` the namespace's active model (on ``probation``: see :class:`ActiveModel`),
    counting what it was trained on."""
    # Read from the store, not the registry's cache: another process may have activated one.
    previous = ModelRegistry.read(store, ns)
    base_model = record.get("base_model")
    if record.get("mode") == "incremental" and previous is not None and previous.model == base_model:
        trained += previous.trained_count  # the new model continues from the previous one
    registry.activate(
        ActiveModel(
            namespace=ns,
            model=model,
            base_model=base_model,
            job_id=str(record["job_id"]),
            trained_count=trained,
            activated_at=time.time(),
            # A calibrated threshold describes the namespace's traffic: keep it.
            threshold=previous.threshold if previous is not None else None,
            probation=probation,
        )
    )
