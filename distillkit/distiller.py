"""The :class:`Distiller`: the composition root.

It builds the parts and wires them together, starts and stops the background work, and reports
:meth:`~Distiller.status`. The parts themselves live where the data path goes:

* :mod:`distillkit.pipeline`: the request path (route, student or teacher, deliver);
* :mod:`distillkit.routing`: the routing decision and the shadow checks;
* :mod:`distillkit.capture`: the capture writer thread and its sink;
* :mod:`distillkit.store`: where points and records live (:mod:`~distillkit.store.resilient`
  reopens a store that failed);
* :mod:`distillkit.training`: fine-tuning rounds that activate a namespace's model.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillkit.capture.sink import Captured, CaptureSink
from distillkit.capture.writer import CaptureWriter
from distillkit.config import DistillConfig
from distillkit.errors import StoreError
from distillkit.events import Events
from distillkit.pipeline import Pipeline, describe
from distillkit.routing.budget import ErrorBudget
from distillkit.routing.embedders import Embedder, make_embedder
from distillkit.routing.router import Router
from distillkit.routing.shadow import ShadowChecks
from distillkit.serving import CompatibleServerProvider, LLMProvider, SameClientProvider
from distillkit.state import (
    DEMOTION_KIND,
    FOLD_AFTER,
    HISTORY_KIND,
    NAMESPACE_KIND,
    STATS_KIND,
    ModelRegistry,
    fold_published_stats,
    merge_stats,
    published_stats,
    saved_stats,
    shadow_summaries,
)
from distillkit.stats import NamespaceStats, Stats
from distillkit.store.base import EmbedderInfo, Store
from distillkit.store.resilient import ResilientStore
from distillkit.streams import response_message

if TYPE_CHECKING:
    from distillkit.training import DatasetProvider, FineTuningProvider, Trainer, TrainingRound, TrainingScheduler

__all__ = ["Distiller", "default_distiller", "set_default_distiller"]

logger = logging.getLogger("distillkit")


class Distiller:
    """Routes intercepted calls, captures teacher answers and trains distilled models.

    Most programs never build one: :func:`distillkit.wrap` uses :func:`default_distiller`,
    configured from the environment. Build one to configure it in code or to keep several
    apart::

        distiller = Distiller(DistillConfig(path="/tmp/dk", threshold=0.92))
        client = distillkit.wrap(OpenAI(), distiller)

    Args:
        config: settings; default :meth:`DistillConfig.from_env`.
        store: a :class:`~distillkit.store.Store`; default: opened from the config on first use.
        embedder: an :class:`~distillkit.routing.embedders.Embedder`; default: ``config.embedder``.
        llm_provider: where the distilled model is served; default: the caller's own client, or
            ``config.distilled_base_url``.
        dataset_provider: turns captured records into a training file; default: OpenAI's chat
            fine-tuning JSONL.
        fine_tuning_provider: starts and polls training jobs; default: the one
            ``config.fine_tuning`` names: OpenAI's fine-tuning API through ``training_client``
            (default ``openai.OpenAI()`` from the environment), or LoRA adapters of
            ``config.base_model`` registered with the vLLM server at ``config.distilled_base_url``.
        training_client: the OpenAI client the default fine-tuning provider uses.
        redact: applied to every text field of a teacher interaction (messages, answer, query)
            before it is stored, e.g. :func:`distillkit.capture.redact.pii`; the fields it changed are
            listed in the stored ``redacted`` field. A redacted query is embedded again from its
            masked text for storage (routing itself used the caller's words). A redactor that
            raises drops that capture instead of storing it unredacted.
        store_backoff: ``(first, most)`` seconds to wait before reopening a store that failed;
            the wait doubles after each failed reopen. A store given as ``store`` is never reopened.
        shadow_rate: share (0 to 1) of the requests the distilled model answered (not streamed,
            not raw) that are also sent to the teacher in the background to compare the answers
            (see :mod:`distillkit.routing.shadow`); 0 (the default) turns shadow checks off.
        shadow_floor: a model whose mean agreement falls under this is demoted.
        shadow_min_samples: checks needed before a model can be demoted.
    """

    def __init__(
        self,
        config: DistillConfig | None = None,
        *,
        store: Store | None = None,
        embedder: Embedder | None = None,
        llm_provider: LLMProvider | None = None,
        dataset_provider: DatasetProvider | None = None,
        fine_tuning_provider: FineTuningProvider | None = None,
        training_client: Any = None,
        redact: Callable[[str], str] | None = None,
        store_backoff: tuple[float, float] = (1.0, 60.0),
        shadow_rate: float = 0.0,
        shadow_floor: float = 0.8,
        shadow_min_samples: int = 20,
    ) -> None:
        self.config = config = config if config is not None else DistillConfig.from_env()
        self._embedder = embedder
        self._open_lock = threading.RLock()
        self._stores = ResilientStore(self._open_store, store, backoff=store_backoff, lock=self._open_lock)
        if llm_provider is None:
            llm_provider = (
                CompatibleServerProvider(config.distilled_base_url, config.distilled_api_key)
                if config.distilled_base_url
                else SameClientProvider()
            )
        self._stats = Stats()
        # Counters are saved per Distiller instance so that `distillkit status`, run in another
        # process, can add up what every process routed and saved.
        self._instance = uuid.uuid4().hex[:12]
        self._stats_saved_at = time.monotonic()
        self._fold_at = 0.0  # when to fold exited processes' counters files next
        #: Where processes sharing an embedded folder publish their counters (one small file each),
        #: readable by `distillkit status` while an application holds the store, and written by a
        #: process that does not own the store too. None: counters are store records (a server store).
        self._counters_dir: Path | None = (
            Path(config.path) / "counters" if store is None and not config.qdrant_url else None
        )
        self._events = Events()
        self.registry = ModelRegistry(lambda: self.store)
        #: Measured student outcomes and the acceptance fitted to ``config.max_error`` (None: off).
        self.budget = (
            ErrorBudget(lambda: self.store, max_error=config.max_error) if config.max_error is not None else None
        )
        self.shadows = ShadowChecks(
            lambda: self.store,
            self.registry,
            rate=shadow_rate,
            floor=shadow_floor,
            min_samples=shadow_min_samples,
            budget=self.budget,
        )
        self.router = Router(
            lambda: self.store,
            lambda: self.embedder,
            self.registry,
            self._lookup_failed,
            config.threshold,
            rule=config.routing_rule,
            neighbours=config.neighbours,
            agreement_margin=config.agreement_margin,
            veto_margin=config.veto_margin,
            budget=self.budget,
            explore_rate=config.explore_rate,
            cross_check=config.cross_check,
        )
        self._dataset_provider = dataset_provider
        self._fine_tuning_provider = fine_tuning_provider
        self._training_client = training_client
        self._trainer: Trainer | None = None
        self._scheduler: TrainingScheduler | None = None
        self._sink = sink = CaptureSink(
            self._stores,
            lambda: self.embedder,
            self._stats,
            self._events,
            dedup_threshold=config.dedup_threshold,
            redact=redact,
            after_write=self._stored,
        )
        self._writer: CaptureWriter[Captured] = CaptureWriter(
            sink.write,
            max_queue=config.capture_queue_size,
            batch_size=config.capture_batch_size,
            on_drop=sink.dropped,
            after_batch=self._after_batch,
        )
        #: The request path: :func:`distillkit.wrap` and scopes send every intercepted call here.
        self.pipeline = Pipeline(
            config, self.router, llm_provider, self.shadows, self._writer, self._stats, self._events
        )
        self._closed = False
        _register(self)

    @classmethod
    def from_env(cls, **overrides: Any) -> Distiller:
        """A Distiller configured from the environment and ``.env`` (overrides win)."""
        return cls(DistillConfig.from_env(**overrides))

    def __repr__(self) -> str:
        return f"Distiller({self.config!r})"

    # --- parts, opened on first use -------------------------------------------------------------

    @property
    def llm_provider(self) -> LLMProvider:
        """Where the distilled model answers (settable)."""
        return self.pipeline.llm_provider

    @llm_provider.setter
    def llm_provider(self, provider: LLMProvider) -> None:
        self.pipeline.llm_provider = provider

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            with self._open_lock:
                if self._embedder is None:
                    self._embedder = make_embedder(self.config.embedder)
        return self._embedder

    @property
    def store(self) -> Store:
        """The store, opened on first use. Raises StoreError while it cannot be opened."""
        return self._stores.get()

    def _open_store(self) -> Store:
        embedder = self.embedder
        info = EmbedderInfo(embedder.name, embedder.dim)
        if self.config.qdrant_url:
            from distillkit.store.server import ServerStore

            return ServerStore(info, url=self.config.qdrant_url, api_key=self.config.qdrant_api_key)
        from distillkit.store.edge import EdgeStore

        return EdgeStore(self.config.path, info)

    def _lookup_failed(self, namespace: str, exc: BaseException) -> None:
        # A store already reported where it failed (held by another process) is not logged per request.
        log = logger.debug if getattr(exc, "reported", False) else logger.warning
        log("distillkit: routing lookup failed (%s); the teacher answers", describe(exc))
        self._stats.add(namespace, store_errors=1)
        self._stores.failed(exc)

    def _after_batch(self) -> None:
        """After each capture batch, stored or dropped: publish the counters now and then."""
        if self._counters_dir is not None:
            try:
                self._save_stats(every=5.0)
            except OSError as exc:
                logger.warning("distillkit could not publish its counters: %s", exc)

    def _stored(self, store: Store) -> None:
        """After each stored capture batch: save the counters now and then."""
        if self._counters_dir is not None:
            return  # published by _after_batch, without the store
        try:
            self._save_stats(every=5.0)
        except StoreError as exc:  # the points are stored; only the counters wait for next time
            logger.warning("distillkit could not save its counters: %s", exc)
            self._stores.failed(exc, store)

    # --- hooks and visibility -----------------------------------------------------------------

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Call ``callback`` on an event; a failing callback is logged, never raised.

        Events: ``"decision"`` (a :class:`~distillkit.RouteInfo`, on the request path),
        ``"capture"`` (an :class:`~distillkit.capture.sink.Interaction`, from the writer thread,
        once stored), ``"drop"`` (the namespace and the reason, when a capture was lost).
        """
        return self._events.on(event, callback)

    def stats(self, namespace: str | None = None) -> dict[str, NamespaceStats]:
        """Counters since this Distiller started, by namespace (or only ``namespace``)."""
        snapshot = self._stats.snapshot()
        return {namespace: snapshot.get(namespace, NamespaceStats())} if namespace else snapshot

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued capture is stored and every shadow check recorded.

        False if ``timeout`` ran out first.
        """
        started = time.monotonic()
        if not self._writer.flush(timeout):
            return False
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
        return self.wait_shadows(left)

    def wait_shadows(self, timeout: float | None = None) -> bool:
        """Wait until every shadow check in flight is recorded. False if ``timeout`` ran out first."""
        return self.shadows.wait(timeout)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per namespace, from the store (so every process's work counts): points stored, indexed
        and pending, the active model, the job in flight, and the saved counters of every process.
        """
        self._save_stats()
        store = self.store
        demotions = store.list_records(DEMOTION_KIND)
        shadows = shadow_summaries(store)
        jobs = self.trainer.jobs()
        totals = self.counters(store)
        rounds: dict[str, list[dict[str, Any]]] = {}
        for job_id, entry in sorted(
            store.list_records(HISTORY_KIND).items(), key=lambda item: float(item[1].get("finished_at") or 0.0)
        ):
            rounds.setdefault(str(entry.get("namespace")), []).append(_round_summary(job_id, entry))
        namespaces = set(store.list_records(NAMESPACE_KIND)) | set(self.registry.all()) | set(demotions)
        report = {}
        for ns in sorted(namespaces | set(totals) | set(jobs)):
            indexed = store.count(namespace=ns, indexed=True)
            stored = store.count(namespace=ns)
            active = self.registry.get(ns)
            counters = totals.get(ns, NamespaceStats())
            report[ns] = {
                "stored": stored,
                "indexed": indexed,
                "pending": stored - indexed,
                "active_model": active.model if active else None,
                "threshold": self.router.threshold(None, active),
                "job": jobs.get(ns),
                "shadow": shadows.get(ns, {}),
                "demoted": demotions.get(ns),
                "rounds": rounds.get(ns, [])[-self.STATUS_ROUNDS :],
                "budget": _budget_summary(self.budget.acceptance(ns) if self.budget is not None else None),
                **counters.as_dict(),
            }
        return report

    #: Training rounds (newest last) shown per namespace by :meth:`status`.
    STATUS_ROUNDS = 5

    def counters(self, store: Store | None = None) -> dict[str, NamespaceStats]:
        """The counters every process saved, by namespace, added up.

        Reads the counter files beside an embedded store without opening it, so it works while
        another process (an application) holds the store; ``store`` adds the records of a server store.
        """
        sources = []
        if self._counters_dir is not None:
            sources.append(published_stats(self._counters_dir))
        if store is not None:
            sources.append(saved_stats(store))
        return merge_stats(*sources)

    def _save_stats(self, *, every: float = 0.0) -> None:
        if time.monotonic() - self._stats_saved_at < every:
            return
        self._stats_saved_at = time.monotonic()
        snapshot = self._stats.snapshot()
        if self._counters_dir is not None:
            if not snapshot:
                return
            from distillkit.store._files import make_private_dir, write_json_atomic

            make_private_dir(self._counters_dir)
            write_json_atomic(
                self._counters_dir / f"{self._instance}.json",
                {
                    "pid": os.getpid(),
                    "saved_at": time.time(),
                    "namespaces": {ns: counters.as_dict() for ns, counters in snapshot.items()},
                },
            )
            if time.monotonic() >= self._fold_at:  # exited processes' files, now and then
                self._fold_at = time.monotonic() + FOLD_AFTER
                fold_published_stats(self._counters_dir, keep=f"{self._instance}.json")
            return
        for ns, counters in snapshot.items():
            self.store.put_record(STATS_KIND, f"{ns}:{self._instance}", {"namespace": ns, **counters.as_dict()})

    # --- training ---------------------------------------------------------------------------

    @property
    def trainer(self) -> Trainer:
        """The :class:`~distillkit.training.Trainer` (built on first use)."""
        if self._trainer is None:
            with self._open_lock:
                if self._trainer is None:
                    from distillkit.training import OpenAIDatasetProvider, Trainer

                    dataset = self._dataset_provider or OpenAIDatasetProvider()
                    fine_tuning = self._fine_tuning_provider or self._configured_fine_tuning()
                    self._trainer = Trainer(
                        store=lambda: self.store,
                        registry=self.registry,
                        config=self.config,
                        dataset_provider=dataset,
                        fine_tuning_provider=fine_tuning,
                        student=self._ask_candidate,
                        judge=self._teacher_judge if self.config.judge == "teacher" else None,
                        on_labels=self.budget.restart if self.budget is not None else None,
                    )
        return self._trainer

    def _ask_candidate(self, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The promotion gate's serving path: the candidate answers as a routed request would be.

        Through the same :class:`~distillkit.serving.LLMProvider`, with the caller's most recent
        client (or, when none was seen in this process, e.g. in a ``distillkit train`` worker, the
        fine-tuning client, which serves OpenAI fine-tunes; or a synchronous copy of an async one).
        """
        return response_message(self.llm_provider.create(self._caller_client(), kwargs))[0]

    def _teacher_judge(
        self, kwargs: dict[str, Any], student: Mapping[str, Any] | None, teacher: Mapping[str, Any] | None
    ) -> bool:
        """Judge mode: the teacher model says whether the candidate's answer says the same as its own."""
        from distillkit._context import internal_call
        from distillkit.training.evaluation import JUDGE_PROMPT

        messages = kwargs.get("messages") or []
        question = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        content = (
            f"Request:\n{question}\n\nReference answer:\n{(teacher or {}).get('content')}\n\n"
            f"Candidate answer:\n{(student or {}).get('content')}"
        )
        with internal_call():
            reply = self._caller_client().chat.completions.create(
                model=kwargs["model"],
                messages=[{"role": "system", "content": JUDGE_PROMPT}, {"role": "user", "content": content}],
                temperature=0,
            )
        verdict = (reply.choices[0].message.content or "").strip().lower()
        return verdict.startswith("yes")

    def _caller_client(self) -> Any:
        """A synchronous client for distillkit's own calls where the caller's own one is best."""
        client = self.pipeline.last_client()
        if client is None:
            provider = self._fine_tuning_provider or (self._trainer.fine_tuning_provider if self._trainer else None)
            client = self._training_client or self._seen_client() or getattr(provider, "client", None)
        return client

    def _seen_client(self) -> Any:
        """The application's latest sync client, or a sync copy of its async one; None if none was seen."""
        client = self.pipeline.last_client()
        if client is None and (aclient := self.pipeline.last_client(asynchronous=True)) is not None:
            import openai

            client = openai.OpenAI(
                api_key=aclient.api_key,
                base_url=aclient.base_url,
                organization=aclient.organization,
                project=aclient.project,
            )
        return client

    def _configured_fine_tuning(self) -> FineTuningProvider:
        """The provider ``config.fine_tuning`` names."""
        config = self.config
        if config.fine_tuning == "lora":
            from distillkit.training.lora import LoRAFineTuningProvider, VLLMServer

            server = None
            if config.distilled_base_url:  # the server that serves the adapters also loads them
                server = VLLMServer(config.distilled_base_url, config.distilled_api_key)
            return LoRAFineTuningProvider(config.lora_dir, base_model=config.base_model, server=server)
        from distillkit.training import OpenAIFineTuningProvider

        # No client given: the application's own (its key and base URL), else OpenAI() from the environment.
        return OpenAIFineTuningProvider(self._training_client, default_client=self._seen_client)

    def start(self) -> None:
        """Start the training scheduler thread: a round every ``config.train_every`` seconds."""
        from distillkit.training import TrainingScheduler

        with self._open_lock:
            if self._scheduler is None or not self._scheduler.running:
                self._scheduler = TrainingScheduler(self.trainer.tick, every_s=self.config.train_every)
                # Jobs in flight are polled often, so a finished job is activated within a minute
                # (and a job left by a restarted process is picked up), whatever the round interval.
                self._scheduler.add(self.trainer.poll, every_s=min(60.0, self.config.train_every))
                self._scheduler.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the scheduler thread (a round in progress finishes first). Idempotent."""
        if self._scheduler is not None:
            self._scheduler.stop(timeout)

    def train_now(
        self, namespace: str | None = None, *, wait: bool = False, timeout: float | None = None
    ) -> list[TrainingRound]:
        """Run a training round now: poll jobs in flight, start jobs where enough data waits.

        Captures still queued are flushed first, so they take part.

        Args:
            namespace: only this namespace (default: every namespace with data).
            wait: return only when the jobs started or polled here have ended and their points
                are flipped (or ``timeout`` ran out).
            timeout: seconds to wait at most, with ``wait``.
        """
        self.flush(timeout)
        rounds = self.trainer.tick(namespace)
        if wait:
            rounds = self.trainer.wait(rounds, timeout=timeout)
        return rounds

    def close(self) -> None:
        """Stop training, flush captures and release the store. Do not use the Distiller afterwards."""
        self._closed = True
        self.stop()
        self._writer.close()
        self.wait_shadows(5.0)  # a check still asking the teacher after that is dropped
        if self._counters_dir is not None or self._stores.current is not None:
            try:
                self._save_stats()
            except Exception as exc:  # closing must not fail because the store did
                logger.warning("distillkit could not save its counters: %s", exc)
        self._stores.close()

    def _at_exit(self) -> None:
        """Interpreter exit: store what is queued and save the counters (routed requests included)."""
        if self._closed:
            return
        self._writer.close(timeout=10.0)
        try:
            if self._counters_dir is not None or self._stores.current is not None:
                self._save_stats()
        except Exception as exc:
            logger.warning("distillkit could not save its counters at exit: %s", exc)

    def _before_fork(self) -> None:
        """Release an embedded store we own, so that one forked worker can own it."""
        if self._counters_dir is not None and not self._closed:
            self._writer.flush(10.0)
            self._stores.release()

    def _after_fork_in_child(self) -> None:
        """A forked child starts clean: its own counters, writer and store handle; no scheduler."""
        self._instance = uuid.uuid4().hex[:12]
        self._stats_saved_at = time.monotonic()
        self._fold_at = 0.0  # when to fold exited processes' counters files next
        self._stats.after_fork()
        self._writer.after_fork()
        self._open_lock = threading.RLock()
        self._stores.after_fork(self._open_lock)
        self._scheduler = None  # its thread stayed in the parent; start() starts one here


_live: weakref.WeakSet[Distiller] = weakref.WeakSet()
_hooks_lock = threading.Lock()
_hooks_registered = False
_finalizer_pid: int | None = None


def _register(distiller: Distiller) -> None:
    """Exit and fork hooks for every Distiller, registered once, holding no strong reference."""
    global _hooks_registered, _finalizer_pid
    with _hooks_lock:
        _live.add(distiller)
        if _finalizer_pid != os.getpid():  # first Distiller in a multiprocessing child, too
            _finalizer_pid = os.getpid()
            _finalize_in_child(None)
        if not _hooks_registered:
            _hooks_registered = True
            atexit.register(_each, "_at_exit")
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(
                    before=lambda: _each("_before_fork"), after_in_child=lambda: _each("_after_fork_in_child")
                )
                import multiprocessing.util

                # A multiprocessing child started with fork leaves through os._exit: atexit never runs
                # there, multiprocessing's own finalizers do (registered afresh in each such child).
                multiprocessing.util.register_after_fork(_HOOKS, _finalize_in_child)


class _Hooks:
    """A weak-referenceable owner for multiprocessing's after-fork registry."""


_HOOKS = _Hooks()


def _finalize_in_child(_: object) -> None:
    global _finalizer_pid
    import multiprocessing.util

    _finalizer_pid = os.getpid()

    multiprocessing.util.Finalize(None, _each, args=("_at_exit",), exitpriority=100)


def _each(method: str) -> None:
    for distiller in list(_live):
        try:
            getattr(distiller, method)()
        except Exception:  # a hook must never break the exit or the fork
            logger.warning("distillkit: %s failed", method.strip("_"), exc_info=True)


def _round_summary(job_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """One ended training round as ``status()`` shows it: outcome and the promotion gate's verdict."""
    evaluation = entry.get("evaluation") or None
    return {
        "job_id": job_id,
        "status": entry.get("status"),
        "model": entry.get("model") or entry.get("candidate"),
        "finished_at": entry.get("finished_at"),
        "held_out": entry.get("held_out", 0),
        "evaluation": (
            {k: evaluation.get(k) for k in ("agreement", "n", "floor", "verdict", "scope", "held_out", "failed")}
            if isinstance(evaluation, dict)
            else None
        ),
        "error": entry.get("error"),
    }


def _budget_summary(acceptance: Any) -> dict[str, Any] | None:
    """The error budget's fit as ``status()`` shows it."""
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
    }


_default: Distiller | None = None
_default_lock = threading.Lock()


def default_distiller() -> Distiller:
    """The process-wide Distiller that ``wrap()`` and scopes use unless given one.

    Built on first use from :meth:`DistillConfig.from_env` (environment and ``.env``).
    """
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Distiller(DistillConfig.from_env())
    return _default


def set_default_distiller(distiller: Distiller | None) -> Distiller | None:
    """Replace the process-wide Distiller (None: build it from the environment again on next use).

    Returns the previous one, which is not closed.
    """
    global _default
    with _default_lock:
        previous, _default = _default, distiller
    return previous
