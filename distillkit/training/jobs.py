"""A namespace's job record, from a job's start to its conclusion.

:class:`JobKeeper` is the half of :class:`~distillkit.training.Trainer` that follows a job once
its record exists: it resolves a record whose job id never followed (its starter stopped), polls
the job in flight, cancels one past ``job_timeout``, and concludes an ended one under the
namespace's ``train:<namespace>`` lease: the promotion gate
(:func:`~distillkit.training.gate.judge_candidate`) first when the round held points out, then
:func:`~distillkit.training.activation.conclude`. Deciding what to train, and starting jobs,
stay in :mod:`distillkit.training.trainer`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from distillkit.routing.labels import Label
from distillkit.state import JOB_KIND, ModelRegistry
from distillkit.training.activation import FLIP_BATCH, conclude
from distillkit.training.evaluation import Evaluation, JudgeFn, StudentFn
from distillkit.training.gate import judge_candidate
from distillkit.training.providers import FineTuningProvider, JobStatus
from distillkit.training.rounds import TrainingRound, describe, from_history, from_history_record, running

if TYPE_CHECKING:
    from distillkit.config import DistillConfig
    from distillkit.store.base import Store

__all__ = ["JobKeeper"]

logger = logging.getLogger("distillkit")


class JobKeeper:
    """Follows and concludes the jobs whose records a :class:`~distillkit.training.Trainer` keeps.

    A base class, not used alone: the trainer sets the attributes below.
    """

    #: Seconds a ``train:<namespace>`` lease lasts: long enough to upload a file and create a
    #: job; a crashed holder blocks other processes for at most this long.
    LOCK_TTL_S = 300.0
    #: Points flipped per store call.
    FLIP_BATCH = FLIP_BATCH
    #: Tries at evaluating a candidate (one per poll) before the round is rejected.
    EVALUATION_ATTEMPTS = 3

    config: DistillConfig
    registry: ModelRegistry
    fine_tuning_provider: FineTuningProvider
    owner: str
    student: StudentFn | None
    judge: JudgeFn | None
    on_labels: Callable[[str, list[Label]], Any] | None

    def _resolve(self, store: Store, ns: str, record: Mapping[str, Any], held: bool) -> TrainingRound:
        """A ``starting`` record whose job id never followed: its process is still creating the
        job, or it stopped in between and the job (if created) is tracked by nobody.

        Once older than the lease, and under the lease, the job is looked up by the record's
        token and adopted; a provider that cannot look jobs up gets the record dropped, with a
        warning, so the next round trains the points again.
        """
        age = time.time() - float(record.get("started_at") or 0.0)
        if age <= self.LOCK_TTL_S:
            return TrainingRound(ns, "skipped", reason="a job is being started for this namespace")
        lease = contextlib.nullcontext(True) if held else self._lease(store, ns)
        with lease as ok:
            if not ok:
                return TrainingRound(ns, "skipped", reason="another process is starting a job for this namespace")
            current = store.get_record(JOB_KIND, ns)
            token = str(record.get("token") or "")
            if current is None or current.get("job_id") or current.get("token") != record.get("token"):
                return TrainingRound(ns, "skipped", reason="the namespace's job record changed meanwhile")
            provider = self.fine_tuning_provider
            by = record.get("owner")
            findable = bool(token and record.get("findable")) and provider.finds_jobs
            findable = findable and record.get("provider", provider.name) == provider.name
            job_id = provider.find(token, namespace=ns) if findable else None
            if job_id is not None:
                adopted = {**current, "job_id": job_id, "status": "started", "adopted_by": self.owner}
                store.put_record(JOB_KIND, ns, adopted)
                logger.warning(
                    "distillkit: %s: %s stopped after starting job %s and before recording it; adopted",
                    ns,
                    by,
                    job_id,
                )
                return TrainingRound(
                    ns,
                    "started",
                    job_id,
                    examples=len(current.get("point_ids") or []),
                    dropped=int(current.get("dropped") or 0),
                    base_model=current.get("base_model"),
                    held_out=len(current.get("held_out") or []),
                    reason="adopted a job whose starter stopped before recording it",
                )
            if findable:
                reason = f"{by} stopped while starting a job, before the {provider.name} provider created one"
            else:
                reason = (
                    f"{by} stopped while starting a job and its {record.get('provider')!r} provider cannot "
                    "look jobs up: a job it created meanwhile is not tracked (check the provider's job list)"
                )
            logger.warning("distillkit: %s: %s; the next round trains these points again", ns, reason)
            store.delete_record(JOB_KIND, ns)
            return TrainingRound(ns, "failed", reason=reason)

    def _poll(self, store: Store, ns: str, record: Mapping[str, Any], *, held: bool = False) -> TrainingRound:
        if not record.get("job_id"):
            return self._resolve(store, ns, record, held)
        job_id = str(record["job_id"])
        provider = self.fine_tuning_provider
        if record.get("provider", provider.name) != provider.name:
            return TrainingRound(
                ns,
                "error",
                job_id,
                reason=f"job {job_id} was started by the {record.get('provider')!r} provider, "
                f"this trainer uses {provider.name!r}",
            )
        status = provider.poll(job_id)
        outcome: str | None = None
        if not status.done:
            age = time.time() - float(record.get("started_at") or 0.0)
            if age <= self.config.job_timeout:
                if status.status != record.get("status"):
                    self._update_status(store, ns, job_id, status.status, held)
                return running(ns, record, status)
            status, outcome = self._time_out(job_id, age)
        if status.succeeded and not status.model:
            status = replace(status, status="failed", error="the job succeeded without a model")
        return self._finish(store, ns, record, status, outcome or status.status, held)

    def _time_out(self, job_id: str, age: float) -> tuple[JobStatus, str | None]:
        """Cancel a job that ran past ``job_timeout``; it may have ended meanwhile, so ask again."""
        provider = self.fine_tuning_provider
        try:
            provider.cancel(job_id)
        except Exception as exc:
            logger.warning("distillkit: could not cancel job %s (%s)", job_id, describe(exc))
            status = provider.poll(job_id)
            if status.done:
                return status, None
        logger.warning("distillkit: job %s ran %.0f s, past job_timeout: cancelled", job_id, age)
        error = f"timed out after {age:.1f} s (job_timeout {self.config.job_timeout:g} s); cancelled"
        return JobStatus("cancelled", error=error), "timed_out"

    def _finish(
        self, store: Store, ns: str, record: Mapping[str, Any], status: JobStatus, outcome: str, held: bool
    ) -> TrainingRound:
        """Conclude an ended job under the namespace's lease (see :func:`~.activation.conclude`)."""
        job_id = str(record["job_id"])
        lease = contextlib.nullcontext(True) if held else self._lease(store, ns)
        with lease as ok:
            if not ok:
                return running(ns, record, status, reason="another process is finishing this job")
            # Finished by another process already? Then its record is gone, or is a newer job's.
            current = store.get_record(JOB_KIND, ns)
            if current is None or current.get("job_id") != job_id:
                return from_history(store, ns, job_id)
            evaluation: Evaluation | None = None
            labels: list[Label] = []
            probation = False
            if outcome == "succeeded" and record.get("held_out") and self.student is not None:
                assert status.model is not None
                logger.info(
                    "distillkit: %s: job %s trained; the promotion gate asks %s on %d held-out points",
                    ns,
                    job_id,
                    status.model,
                    len(record["held_out"]),
                )
                try:
                    evaluation, labels = judge_candidate(
                        store,
                        ns,
                        record,
                        status.model,
                        student=self.student,
                        judge=self.judge,
                        config=self.config,
                        batch=self.FLIP_BATCH,
                    )
                except Exception as exc:
                    attempts = int(record.get("evaluation_attempts") or 0) + 1
                    reason = f"could not evaluate the candidate: {describe(exc)}"
                    logger.warning("distillkit: %s: job %s: %s (try %d)", ns, job_id, reason, attempts)
                    if attempts < self.EVALUATION_ATTEMPTS:
                        store.put_record(
                            JOB_KIND, ns, {**record, "evaluation_attempts": attempts, "evaluation_error": reason}
                        )
                        return running(ns, record, status, reason=f"{reason}; trying again")
                    outcome = "rejected"
                    status = replace(status, error=f"{reason} ({attempts} tries); nothing was activated")
                else:
                    if evaluation.verdict != "promoted" and self._on_probation(store, ns, evaluation):
                        probation = True
                    elif evaluation.verdict != "promoted":
                        outcome = "rejected"
                        status = replace(status, error=f"promotion gate: {evaluation.reason}")
            history = conclude(
                store,
                self.registry,
                ns,
                record,
                status,
                outcome,
                flip_batch=self.FLIP_BATCH,
                evaluation=evaluation.as_record() if evaluation is not None else None,
                probation=probation,
            )
        if outcome == "succeeded" and self.on_labels is not None:
            try:
                self.on_labels(ns, labels)  # the new model's own (none without a gate)
            except Exception as exc:  # the model is active; only the labels are lost
                logger.warning("distillkit: %s: could not keep the gate's labels (%s)", ns, describe(exc))
        if probation:
            logger.warning(
                "distillkit: %s: %s is on probation (%s): it routes only where its labels certify a region",
                ns,
                status.model,
                evaluation.reason if evaluation is not None else "",
            )
        elif outcome == "succeeded":
            logger.info("distillkit: %s: job %s succeeded; %s is active", ns, job_id, status.model)
        else:
            logger.warning("distillkit: %s: job %s %s: %s", ns, job_id, outcome, status.error)
        return from_history_record(ns, history)

    def _on_probation(self, store: Store, ns: str, evaluation: Evaluation) -> bool:
        """Whether a candidate below the floor is activated on probation: it answered some held-out
        points right, and no model serves the namespace (or only one on probation)."""
        if not self.config.probation or evaluation.agreed == 0 or self.config.max_error is None:
            return False
        current = ModelRegistry.read(store, ns)
        return current is None or current.probation

    @contextlib.contextmanager
    def _lease(self, store: Store, ns: str) -> Iterator[bool]:
        name = f"train:{ns}"
        ttl = self.LOCK_TTL_S
        held = store.try_lock(name, self.owner, ttl)
        done = threading.Event()
        renewer: threading.Thread | None = None
        if held:
            # Renewed while held: a slow upload must not outlast the lease and let another
            # process start a second (paid) job for the namespace.
            def renew() -> None:
                while not done.wait(ttl / 3):
                    try:
                        store.try_lock(name, self.owner, ttl)
                    except Exception as exc:  # the next renewal, or the lease's end, decides
                        logger.warning("distillkit: could not renew the lease %s (%s)", name, describe(exc))

            renewer = threading.Thread(target=renew, name=f"distillkit-lease-{ns}", daemon=True)
            renewer.start()
        try:
            yield held
        finally:
            done.set()
            if renewer is not None:
                renewer.join(10.0)  # a renewal in flight must not take the lease back after the release
            if held:
                try:
                    store.release_lock(name, self.owner)
                except Exception as exc:  # it expires after LOCK_TTL_S anyway
                    logger.warning("distillkit: could not release the lease %s (%s)", name, describe(exc))

    def _update_status(self, store: Store, ns: str, job_id: str, status: str, held: bool) -> None:
        """Keep the record's status current (for ``distillkit status``); best effort."""
        lease = contextlib.nullcontext(True) if held else self._lease(store, ns)
        with lease as ok:
            current = store.get_record(JOB_KIND, ns) if ok else None
            if current is not None and current.get("job_id") == job_id:
                store.put_record(JOB_KIND, ns, {**current, "status": status})
