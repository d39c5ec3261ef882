"""Training rounds: collect new captures, start a fine-tuning job, poll it, and conclude it.

State lives in the store's ``job`` and ``job_history`` records (:mod:`distillkit.state`), never
only in memory, so that a restarted process (or another one sharing a server store) carries on
where this one stopped. At most one job runs per namespace: starting one, and concluding it,
happen under the store's ``train:<namespace>`` lease. A job that succeeded is concluded by
:mod:`distillkit.training.activation`: exactly its points flip, and its model becomes active.

Following a job once its record exists (polling, time-outs, concluding it under the lease) is
:class:`~distillkit.training.jobs.JobKeeper`, which :class:`Trainer` extends.

The promotion gate (:mod:`distillkit.training.gate`, :mod:`distillkit.training.evaluation`):
when the trainer is given the serving path (``student``), each round holds out a share of its
pending points (``holdout``), recorded in the job record. After the job succeeded the candidate
answers them; only if enough answers agree with the teacher's (``promotion_floor``) are the
trained points flipped and the candidate activated. Otherwise the round ends ``rejected``, with
its evaluation in the history, and nothing changes. Held-out points are never flipped; they
train in the next round.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from distillkit.errors import FineTuningUnavailableError
from distillkit.routing.labels import Label
from distillkit.state import HISTORY_KIND, JOB_KIND, ModelRegistry
from distillkit.training.evaluation import JudgeFn, StudentFn
from distillkit.training.gate import hold_out
from distillkit.training.jobs import JobKeeper
from distillkit.training.providers import DatasetProvider, FineTuningProvider
from distillkit.training.rounds import ENDED, TrainingRound, failed, from_history

if TYPE_CHECKING:
    from distillkit.config import DistillConfig
    from distillkit.store.base import Store
    from distillkit.training.progress import ProgressLine

__all__ = ["Trainer", "TrainingRound"]

logger = logging.getLogger("distillkit")

#: Longest pause of a namespace whose fine-tuning provider refuses to create jobs.
_MAX_PAUSE = 24 * 3600.0


class Trainer(JobKeeper):
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

    #: Held-out points per round at most: a bigger evaluation adds little and delays training.
    MAX_HELD_OUT = 200

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

    def wait(
        self, rounds: Sequence[TrainingRound], timeout: float | None = None, progress: ProgressLine | None = None
    ) -> list[TrainingRound]:
        """Poll until every job of ``rounds`` has ended and been finished, or ``timeout`` runs out.

        Starts no new job. Sleeps between polls grow from 0.05 s to 2 s.

        Args:
            rounds: what :meth:`tick` returned; rounds without a job in flight pass through.
            timeout: seconds to wait at most (None: until the jobs end).
            progress: shows each job's latest progress while waiting.

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
                elif progress is not None:
                    progress.show(f"{latest.namespace}: {latest.reason or latest.status}")
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

    def _last_incremental_rejected(self, ns: str) -> bool:
        """Whether the namespace's newest gated round continued an adapter and was rejected: the
        next round then trains from the base on every point, so a drift that several incremental
        rounds piled up (or forgetting that replay did not prevent) is not carried on."""
        ended = [r for r in self.history(ns) if r.get("outcome") in ("succeeded", "rejected")]
        return bool(ended) and ended[-1].get("outcome") == "rejected" and ended[-1].get("mode") == "incremental"

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
        incremental = config.training_mode == "incremental" and not self._last_incremental_rejected(ns)
        if config.training_mode == "incremental" and not incremental:
            logger.info("distillkit: %s: the last incremental round was rejected; retraining from the base", ns)
        active = ModelRegistry.read(store, ns)
        base_model = active.model if incremental and active is not None else config.base_model
        # Read after taking the lease: a snapshot taken earlier could hold points that a job
        # finished meanwhile already trained on.
        pending = list(store.scroll(namespace=ns, indexed=False))
        if len(pending) < config.min_examples:
            return TrainingRound(ns, "skipped", reason=f"{len(pending)} new examples, {config.min_examples} needed")
        held_out: list[str] = []
        if self.gated:
            held_out, why = hold_out(store, ns, pending, config, most=self.MAX_HELD_OUT, batch=self.FLIP_BATCH)
            if not held_out:
                return TrainingRound(ns, "skipped", reason=why)
        kept_out = set(held_out)
        pending = [p for p in pending if p.id not in kept_out]
        replayed: list[Any] = []
        if incremental:
            replayed = _replay(store, ns, round(len(pending) * config.replay)) if active else []
            points = pending + replayed
        else:
            points = [p for p in store.scroll(namespace=ns) if p.id not in kept_out]
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
        # Replayed points stay with the round that flipped them: only the new ones are this job's.
        point_ids = [points[i].id for i in dataset.kept if i < len(points) - len(replayed)]
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
            "mode": "incremental" if incremental else "full",
            "status": "starting",
            "started_at": time.time(),
            "examples": len(dataset.examples),
            "replayed": len(replayed),
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

    def _forget_start(self, store: Store, ns: str, token: str) -> None:
        """Remove this trainer's ``starting`` record after the provider said no job was created."""
        with contextlib.suppress(Exception):
            current = store.get_record(JOB_KIND, ns)
            if current is not None and current.get("token") == token and not current.get("job_id"):
                store.delete_record(JOB_KIND, ns)

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


def _replay(store: Store, ns: str, count: int) -> list[Any]:
    """``count`` of the namespace's trained points, a uniform sample (reservoir: one pass, any size)."""
    if count <= 0:
        return []
    rng = random.Random(count)
    sample: list[Any] = []
    for seen, point in enumerate(store.scroll(namespace=ns, indexed=True)):
        if seen < count:
            sample.append(point)
        elif (slot := rng.randrange(seen + 1)) < count:
            sample[slot] = point
    return sample


def _suffix(namespace: str) -> str | None:
    """A model-name suffix from the namespace: OpenAI allows few characters and a short length."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", namespace.lower()).strip("-")
    return cleaned[:32] or None
