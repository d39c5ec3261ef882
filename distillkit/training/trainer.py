"""Training rounds: collect new captures, start a fine-tuning job, poll it, and conclude it.

State lives in the store's ``job`` and ``job_history`` records (:mod:`distillkit.state`), never
only in memory, so that a restarted process (or another one sharing a server store) carries on
where this one stopped. At most one job runs per namespace: starting one, and concluding it,
happen under the store's ``train:<namespace>`` lease. A job that succeeded is concluded by
:mod:`distillkit.training.activation`: exactly its points flip, and its model becomes active.

The promotion gate (:mod:`distillkit.training.evaluation`): when the trainer is given the serving
path (``student``), each round holds out a share of its pending points (``holdout``), recorded in
the job record. After the job succeeded the candidate answers them; only if enough answers agree
with the teacher's (``promotion_floor``) are the trained points flipped and the candidate
activated. Otherwise the round ends ``rejected``, with its evaluation in the history, and nothing
changes. Held-out points are never flipped; they train in the next round.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from distillkit.errors import FineTuningUnavailableError
from distillkit.routing.labels import Label, answer_class, answer_key
from distillkit.state import HISTORY_KIND, HOLDOUT_KIND, JOB_KIND, ModelRegistry
from distillkit.training.activation import FLIP_BATCH, conclude
from distillkit.training.evaluation import (
    MIN_ROUTABLE_VERDICT,
    Evaluation,
    JudgeFn,
    StudentFn,
    evaluate,
    split_holdout,
)
from distillkit.training.providers import DatasetProvider, FineTuningProvider, JobStatus
from distillkit.training.rounds import (
    ENDED,
    TrainingRound,
    describe,
    failed,
    from_history,
    from_history_record,
    running,
)

if TYPE_CHECKING:
    from distillkit.config import DistillConfig
    from distillkit.store.base import Store

__all__ = ["Trainer", "TrainingRound"]

logger = logging.getLogger("distillkit")

#: Longest pause of a namespace whose fine-tuning provider refuses to create jobs.
_MAX_PAUSE = 24 * 3600.0


class Trainer:
    """Runs training rounds for every namespace of a store.

    Most programs use it through :class:`~distillkit.Distiller` (``train_now()``, ``start()``);
    the ``distillkit train`` command runs it as a worker.

    Args:
        store: returns the store (called on each use, so a store opened lazily works).
        registry: the namespace → active model registry, updated when a job succeeds.
        config: ``min_examples``, ``base_model``, ``training_mode`` and ``job_timeout`` apply.
        dataset_provider: turns captured records into a training file.
        fine_tuning_provider: starts and polls jobs.
        owner: this trainer's name in the store's leases; default: host, process id and a
            random part, unique per trainer.
        student: sends a request to a candidate model through the serving path routed requests
            take, returning its assistant message; with it (and ``config.holdout`` > 0) the
            promotion gate is on. Without it, every succeeded job is activated as before.
        judge: compare answers with this (teacher-as-judge) instead of the rules.
        on_labels: receives ``(namespace, labels)`` each time a model is activated: the labels
            measured on its held-out points (none without the gate), which replace the previous
            model's in the error budget.

    Example:
        >>> rounds = trainer.tick()  # doctest: +SKIP
        >>> rounds = trainer.wait(rounds, timeout=3600)  # doctest: +SKIP
    """

    #: Seconds a ``train:<namespace>`` lease lasts: long enough to upload a file and create a
    #: job; a crashed holder blocks other processes for at most this long.
    LOCK_TTL_S = 300.0
    #: Points flipped per store call.
    FLIP_BATCH = FLIP_BATCH
    #: Held-out points per round at most: a bigger evaluation adds little and delays training.
    MAX_HELD_OUT = 200
    #: Tries at evaluating a candidate (one per poll) before the round is rejected.
    EVALUATION_ATTEMPTS = 3

    def __init__(
        self,
        *,
        store: Callable[[], Store],
        registry: ModelRegistry,
        config: DistillConfig,
        dataset_provider: DatasetProvider,
        fine_tuning_provider: FineTuningProvider,
        owner: str | None = None,
        student: StudentFn | None = None,
        judge: JudgeFn | None = None,
        on_labels: Callable[[str, list[Label]], Any] | None = None,
    ) -> None:
        self._store = store
        self.student = student
        self.judge = judge
        self.on_labels = on_labels
        self.registry = registry
        self.config = config
        self.dataset_provider = dataset_provider
        self.fine_tuning_provider = fine_tuning_provider
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Store leases keep other processes out; this keeps this trainer's own threads (the
        # scheduler and a train_now() call) from interleaving, since they share one owner name.
        self._lock = threading.RLock()
        #: Namespaces whose provider refused to fine-tune: (resume at, pause length, reason).
        self._paused: dict[str, tuple[float, float, str]] = {}

    def __repr__(self) -> str:
        return f"Trainer(owner={self.owner!r}, provider={self.fine_tuning_provider.name!r})"

    # --- rounds ---------------------------------------------------------------------------

    def tick(self, namespace: str | None = None) -> list[TrainingRound]:
        """Run one round: poll the jobs in flight, start jobs where enough new data waits.

        Never raises for a failing store or provider: the failure is logged on the
        ``distillkit`` logger and reported as a round with status ``error``, and the other
        namespaces proceed.

        Args:
            namespace: only this namespace (default: every namespace with new data or a job).

        Returns:
            One round per namespace considered.
        """
        with self._lock:
            try:
                store = self._store()
                namespaces = [namespace] if namespace is not None else self._namespaces(store)
            except Exception as exc:
                return [failed(namespace or "*", "list namespaces", exc)]
            rounds = []
            for ns in namespaces:
                try:
                    rounds.append(self._round(store, ns))
                except Exception as exc:
                    rounds.append(failed(ns, "run a training round", exc))
            return rounds

    def poll(self, namespace: str | None = None) -> list[TrainingRound]:
        """Poll the jobs in flight (and finish the ended ones) without starting new jobs.

        Cheap enough to run much more often than :meth:`tick`.
        """
        with self._lock:
            try:
                store = self._store()
                records = store.list_records(JOB_KIND)
            except Exception as exc:
                return [failed(namespace or "*", "list jobs", exc)]
            rounds = []
            for ns, record in sorted(records.items()):
                if namespace is not None and ns != namespace:
                    continue
                try:
                    rounds.append(self._poll(store, ns, record))
                except Exception as exc:
                    rounds.append(failed(ns, "poll a job", exc, job_id=record.get("job_id")))
            return rounds

    def wait(self, rounds: Sequence[TrainingRound], timeout: float | None = None) -> list[TrainingRound]:
        """Poll until every job of ``rounds`` has ended and been finished, or ``timeout`` runs out.

        Starts no new job. Sleeps between polls grow from 0.05 s to 2 s.

        Args:
            rounds: what :meth:`tick` returned; rounds without a job in flight pass through.
            timeout: seconds to wait at most (None: until the jobs end).

        Returns:
            The rounds, those of the jobs waited for replaced by their latest state.
        """
        results = list(rounds)
        waiting = {i: r for i, r in enumerate(results) if r.in_flight}
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.05
        while waiting:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(delay, remaining))
            else:
                time.sleep(delay)
            delay = min(delay * 1.5, 2.0)
            for i, original in list(waiting.items()):
                assert original.job_id is not None
                latest = self._follow(original.namespace, original.job_id)
                results[i] = latest
                if latest.status in ENDED:
                    del waiting[i]
        return results

    # --- what the CLI shows -----------------------------------------------------------------

    def jobs(self) -> dict[str, dict[str, Any]]:
        """The jobs in flight, by namespace (their records, as stored)."""
        return self._store().list_records(JOB_KIND)

    def history(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Ended jobs (oldest first), of every namespace or only ``namespace``."""
        entries = [
            {"job_id": job_id, **record}
            for job_id, record in self._store().list_records(HISTORY_KIND).items()
            if namespace is None or record.get("namespace") == namespace
        ]
        return sorted(entries, key=lambda r: float(r.get("finished_at") or 0.0))

    def export(self, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """The training examples of every stored point (trained or not), as the dataset provider makes them.

        Records the provider cannot use are left out. An example whose record was redacted before
        capture carries ``"redacted": [fields]``, so a reader knows the text was masked.
        """
        batch: list[dict[str, Any]] = []
        for point in self._store().scroll(namespace=namespace):
            batch.append(point.payload)
            if len(batch) >= 256:
                yield from self._marked(batch)
                batch = []
        if batch:
            yield from self._marked(batch)

    def _marked(self, records: Sequence[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
        dataset = self.dataset_provider.build(records)
        for example, index in zip(dataset.examples, dataset.kept, strict=True):
            redacted = records[index].get("redacted")
            yield {**example, "redacted": list(redacted)} if redacted else dict(example)

    # --- one namespace ------------------------------------------------------------------------

    def _pause(self, ns: str, exc: FineTuningUnavailableError) -> TrainingRound:
        """The provider will not fine-tune at all: say so once, and stop asking for a while.

        Nothing was started or flipped; the points wait. The pause doubles while the refusal
        lasts (up to a day), so a shut-out account costs one request per pause, not one per round.
        """
        previous = self._paused.get(ns)
        length = min(_MAX_PAUSE, previous[1] * 2) if previous is not None else exc.retry_after
        self._paused[ns] = (time.time() + length, length, str(exc))
        logger.error(
            "distillkit: %s: training paused for %.0f minutes: %s", ns, length / 60, exc, exc_info=previous is None
        )
        return TrainingRound(ns, "error", reason=f"fine-tuning unavailable, paused {length / 60:.0f} min: {exc}")

    def _namespaces(self, store: Store) -> list[str]:
        """Namespaces with a job in flight or with points not yet trained on."""
        found = set(store.list_records(JOB_KIND))
        for point in store.scroll(indexed=False):
            ns = point.payload.get("namespace")
            if isinstance(ns, str) and ns:
                found.add(ns)
        return sorted(found)

    def _round(self, store: Store, ns: str) -> TrainingRound:
        record = store.get_record(JOB_KIND, ns)
        if record is not None:
            return self._poll(store, ns, record)
        paused = self._paused.get(ns)
        if paused is not None and time.time() < paused[0]:
            resume = time.strftime("%H:%M", time.localtime(paused[0]))
            return TrainingRound(ns, "skipped", reason=f"paused until {resume}: {paused[2]}")
        needed = self.config.min_examples
        pending = store.count(namespace=ns, indexed=False)
        if pending < needed:
            return TrainingRound(ns, "skipped", reason=f"{pending} new examples, {needed} needed")
        with self._lease(store, ns) as held:
            if not held:
                return TrainingRound(ns, "skipped", reason="another process is starting a job for this namespace")
            # Another process may have started (or finished) a job between our read and the lease.
            record = store.get_record(JOB_KIND, ns)
            if record is not None:
                return self._poll(store, ns, record, held=True)
            return self._start(store, ns)

    def _start(self, store: Store, ns: str) -> TrainingRound:
        config = self.config
        incremental = config.training_mode == "incremental"
        active = ModelRegistry.read(store, ns)
        base_model = active.model if incremental and active is not None else config.base_model
        # Read after taking the lease: a snapshot taken earlier could hold points that a job
        # finished meanwhile already trained on.
        pending = list(store.scroll(namespace=ns, indexed=False))
        if len(pending) < config.min_examples:
            return TrainingRound(ns, "skipped", reason=f"{len(pending)} new examples, {config.min_examples} needed")
        held_out: list[str] = []
        if self.gated:
            held_out, why = self._hold_out(store, ns, pending)
            if not held_out:
                return TrainingRound(ns, "skipped", reason=why)
        kept_out = set(held_out)
        pending = [p for p in pending if p.id not in kept_out]
        points = pending if incremental else [p for p in store.scroll(namespace=ns) if p.id not in kept_out]
        dataset = self.dataset_provider.build([p.payload for p in points])
        if dataset.dropped:
            logger.info(
                "distillkit: %s: %d record(s) dropped from training: %s", ns, dataset.dropped, dataset.drop_reasons
            )
        if len(dataset.examples) < config.min_examples:
            return TrainingRound(
                ns,
                "skipped",
                examples=len(dataset.examples),
                dropped=dataset.dropped,
                reason=f"{len(dataset.examples)} usable examples, {config.min_examples} needed",
            )
        point_ids = [points[i].id for i in dataset.kept]
        provider = self.fine_tuning_provider
        token = uuid.uuid4().hex
        record: dict[str, Any] = {
            "job_id": None,
            "token": token,
            "findable": provider.finds_jobs,  # the job will carry the token
            "namespace": ns,
            "point_ids": point_ids,
            "provider": provider.name,
            "base_model": base_model,
            "mode": config.training_mode,
            "status": "starting",
            "started_at": time.time(),
            "examples": len(dataset.examples),
            "dropped": dataset.dropped,
            "drop_reasons": dataset.drop_reasons,
            "owner": self.owner,
            "held_out": held_out,
        }
        # Recorded before the (paid) job exists: a process that stops between creating the job
        # and recording its id leaves this record, which a later round resolves (_resolve).
        store.put_record(JOB_KIND, ns, record)
        try:
            tagged = {"token": token} if provider.finds_jobs else {}
            job_id = provider.start(dataset.data, base_model=base_model, namespace=ns, suffix=_suffix(ns), **tagged)
        except FineTuningUnavailableError as exc:
            self._forget_start(store, ns, token)
            return self._pause(ns, exc)
        except Exception:
            self._forget_start(store, ns, token)
            raise
        self._paused.pop(ns, None)
        record = {**record, "job_id": job_id, "status": "started"}
        try:
            store.put_record(JOB_KIND, ns, record)
        except Exception:
            # A job without its record would be forgotten and its data trained on again: stop it.
            with contextlib.suppress(Exception):
                provider.cancel(job_id)
            self._forget_start(store, ns, token)
            raise
        logger.info(
            "distillkit: %s: started %s job %s on %d examples from %s",
            ns,
            provider.name,
            job_id,
            len(point_ids),
            base_model,
        )
        return TrainingRound(
            ns,
            "started",
            job_id,
            examples=len(point_ids),
            dropped=dataset.dropped,
            base_model=base_model,
            held_out=len(held_out),
        )

    @property
    def gated(self) -> bool:
        """Whether rounds hold points out and candidates must pass the promotion gate."""
        return self.student is not None and self.config.holdout > 0

    def _hold_out(self, store: Store, ns: str, pending: Sequence[Any]) -> tuple[list[str], str | None]:
        """The round's held-out ids (near-duplicates together), or none and why."""
        config = self.config
        vectors: dict[str, Any] = {}
        ids = [p.id for p in pending]
        for start in range(0, len(ids), self.FLIP_BATCH):
            for point in store.retrieve(ids[start : start + self.FLIP_BATCH], with_vectors=True):
                if point.vector is not None:
                    vectors[point.id] = point.vector
        ids = [i for i in ids if i in vectors]
        previous = store.get_record(HOLDOUT_KIND, ns) or {}
        split = split_holdout(
            ids,
            np.asarray([vectors[i] for i in ids], dtype=np.float32).reshape(len(ids), -1),
            share=config.holdout,
            minimum=config.holdout_min,
            keep=config.min_examples,
            most=self.MAX_HELD_OUT,
            must_train=[str(i) for i in previous.get("ids") or []],
        )
        if not split.held_out:
            return [], f"promotion gate: {split.reason}; waiting for more data"
        store.put_record(HOLDOUT_KIND, ns, {"ids": split.held_out, "at": time.time()})
        return split.held_out, None

    def _forget_start(self, store: Store, ns: str, token: str) -> None:
        """Remove this trainer's ``starting`` record after the provider said no job was created."""
        with contextlib.suppress(Exception):
            current = store.get_record(JOB_KIND, ns)
            if current is not None and current.get("token") == token and not current.get("job_id"):
                store.delete_record(JOB_KIND, ns)

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
            if outcome == "succeeded" and record.get("held_out") and self.student is not None:
                assert status.model is not None
                try:
                    evaluation, labels = self._evaluate(store, ns, record, status.model)
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
                    if evaluation.verdict == "rejected":
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
            )
        if outcome == "succeeded" and self.on_labels is not None:
            try:
                self.on_labels(ns, labels)  # the new model's own (none without a gate)
            except Exception as exc:  # the model is active; only the labels are lost
                logger.warning("distillkit: %s: could not keep the gate's labels (%s)", ns, describe(exc))
        if outcome == "succeeded":
            logger.info("distillkit: %s: job %s succeeded; %s is active", ns, job_id, status.model)
        else:
            logger.warning("distillkit: %s: job %s %s: %s", ns, job_id, outcome, status.error)
        return from_history_record(ns, history)

    def _evaluate(self, store: Store, ns: str, record: Mapping[str, Any], model: str) -> tuple[Evaluation, list[Label]]:
        """The candidate answers the held-out points; labels say what the router would have seen.

        A held-out point's label carries the similarity of its nearest neighbour in the candidate's
        training data (this round's trained points, and the points trained before), of the same
        task, and that neighbour's answer class. The verdict counts the held-out points the router
        would route (neighbour at or above the configured threshold) when there are at least
        ``MIN_ROUTABLE_VERDICT`` (and ``holdout_min``) of them, else all.
        """
        assert self.student is not None
        held = {p.id: p for p in store.retrieve([str(i) for i in record.get("held_out") or []], with_vectors=True)}
        trained: list[Any] = []
        point_ids = [str(i) for i in record.get("point_ids") or []]
        for start in range(0, len(point_ids), self.FLIP_BATCH):
            trained.extend(store.retrieve(point_ids[start : start + self.FLIP_BATCH], with_vectors=True))
        by_task: dict[Any, tuple[np.ndarray, list[Any]]] = {}
        for fp in {p.payload.get("fingerprint") for p in trained}:
            mine = [p for p in trained if p.payload.get("fingerprint") == fp and p.vector is not None]
            if mine:
                by_task[fp] = (_unit(np.asarray([p.vector for p in mine], dtype=np.float32)), mine)
        neighbours: dict[str, tuple[float, str | None]] = {}
        for point_id, point in held.items():
            if point.vector is None:
                continue
            fp = point.payload.get("fingerprint")
            found: tuple[float, str | None] | None = None
            if fp in by_task:
                matrix, mine = by_task[fp]
                sims = matrix @ _unit(np.asarray([point.vector], dtype=np.float32))[0]
                j = int(np.argmax(sims))
                found = (float(sims[j]), answer_class(answer_key(mine[j].payload)))
            hits = store.search(point.vector, namespace=ns, fingerprint=fp, indexed=True, limit=1)
            if hits and (found is None or hits[0].score > found[0]):
                found = (float(hits[0].score), answer_class(answer_key(hits[0].payload)))
            if found is not None:
                neighbours[point_id] = found
        threshold = self.config.threshold
        routable = {i for i, (score, _) in neighbours.items() if score >= threshold}
        evaluation = evaluate(
            model,
            [(i, p.payload) for i, p in held.items()],
            self.student,
            floor=self.config.promotion_floor,
            context=[p.payload for p in trained],
            judge=self.judge,
            counted=routable if len(routable) >= max(self.config.holdout_min, MIN_ROUTABLE_VERDICT) else None,
        )
        # With the cross-check on, a held-out answer that is not its nearest neighbour's would have
        # gone to the teacher: it says nothing about the answers the router lets through.
        checked = self.config.cross_check is not None
        labels = [
            Label(neighbours[r.id][0], r.agreed, neighbours[r.id][1], "gate")
            for r in evaluation.results
            if r.error is None
            and r.id in neighbours
            and not (checked and r.answer_class is not None and r.answer_class != neighbours[r.id][1])
        ]
        return evaluation, labels

    def _follow(self, ns: str, job_id: str) -> TrainingRound:
        """The latest state of one job: polled while in flight, else read from the history."""
        with self._lock:
            try:
                store = self._store()
                record = store.get_record(JOB_KIND, ns)
                if record is not None and record.get("job_id") == job_id:
                    return self._poll(store, ns, record)
                return from_history(store, ns, job_id)
            except Exception as exc:
                return failed(ns, "poll a job", exc, job_id=job_id)

    # --- helpers --------------------------------------------------------------------------------

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


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _suffix(namespace: str) -> str | None:
    """A model-name suffix from the namespace: OpenAI allows few characters and a short length."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", namespace.lower()).strip("-")
    return cleaned[:32] or None
