"""The :class:`Distiller`: the composition root.

It builds the parts and wires them together, starts and stops the background work, and reports
:meth:`~Distiller.status`. The parts themselves live where the data path goes:

* :mod:`distillkit.pipeline`: the request path (route, student or teacher, deliver);
* :mod:`distillkit.routing`: the routing decision and the shadow checks;
* :mod:`distillkit.capture`: the capture writer thread and its sink;
* :mod:`distillkit.store`: where points and records live (:mod:`~distillkit.store.resilient`
  reopens a store that failed);
* :mod:`distillkit.training`: fine-tuning rounds that activate a namespace's model
  (:mod:`~distillkit.training.factory` builds the trainer).

What it reports comes from :mod:`distillkit.status` and :mod:`distillkit.counters`; its exit and
fork hooks are registered by :mod:`distillkit._process_hooks`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from distillkit._process_hooks import register
from distillkit.capture.sink import Captured, CaptureSink
from distillkit.capture.writer import CaptureWriter
from distillkit.config import DistillConfig
from distillkit.counters import CounterPublisher
from distillkit.errors import StoreBusyError
from distillkit.events import Events
from distillkit.pipeline import Pipeline, describe
from distillkit.routing.budget import ErrorBudget
from distillkit.routing.embedders import Embedder, make_embedder
from distillkit.routing.router import Router
from distillkit.routing.shadow import ShadowChecks
from distillkit.serving import CompatibleServerProvider, LLMProvider, SameClientProvider
from distillkit.state import ModelRegistry
from distillkit.stats import NamespaceStats, Stats
from distillkit.status import status_report
from distillkit.store.base import EmbedderInfo, Store
from distillkit.store.resilient import ResilientStore

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
        if isinstance(llm_provider, CompatibleServerProvider) and llm_provider.register_again is None:
            llm_provider.register_again = self._register_again
        self._stats = Stats()
        # Counters are saved per Distiller instance so that `distillkit status`, run in another
        # process, can add up what every process routed and saved: as files beside an embedded
        # folder (readable while an application holds the store), else as store records.
        self._counters = CounterPublisher(
            self._stats,
            Path(config.path) / "counters" if store is None and not config.qdrant_url else None,
            lambda: self.store,
            self._stores.failed,
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
            exact_fields=config.exact_fields,
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
            lookup_timeout=config.lookup_timeout,
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
            after_write=self._counters.after_store,
        )
        self._writer: CaptureWriter[Captured] = CaptureWriter(
            sink.write,
            max_queue=config.capture_queue_size,
            batch_size=config.capture_batch_size,
            on_drop=sink.dropped,
            after_batch=self._counters.after_batch,
        )
        #: The request path: :func:`distillkit.wrap` and scopes send every intercepted call here.
        self.pipeline = Pipeline(
            config, self.router, llm_provider, self.shadows, self._writer, self._stats, self._events
        )
        self._closed = False
        register(self)

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

        return EdgeStore(self.config.path, info, engine=self.config.edge_engine)

    def _lookup_failed(self, namespace: str, exc: BaseException) -> None:
        if isinstance(exc, StoreBusyError):  # not a failure: the store stays open
            self._stats.add(namespace, store_busy=1)
            return
        # A store already reported where it failed (held by another process) is not logged per request.
        log = logger.debug if getattr(exc, "reported", False) else logger.warning
        log("distillkit: routing lookup failed (%s); the teacher answers", describe(exc))
        self._stats.add(namespace, store_errors=1)
        self._stores.failed(exc)

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
        self._counters.save()
        return status_report(
            self.store,
            registry=self.registry,
            router=self.router,
            budget=self.budget,
            jobs=lambda: self.trainer.jobs(),
            totals=self.counters,
            rounds_shown=self.STATUS_ROUNDS,
        )

    #: Training rounds (newest last) shown per namespace by :meth:`status`.
    STATUS_ROUNDS = 5

    def counters(self, store: Store | None = None) -> dict[str, NamespaceStats]:
        """The counters every process saved, by namespace, added up.

        Reads the counter files beside an embedded store without opening it, so it works while
        another process (an application) holds the store; ``store`` adds the records of a server store.
        """
        return self._counters.totals(store)

    # --- training ---------------------------------------------------------------------------

    @property
    def trainer(self) -> Trainer:
        """The :class:`~distillkit.training.Trainer` (built on first use)."""
        if self._trainer is None:
            with self._open_lock:
                if self._trainer is None:
                    from distillkit.training.factory import make_trainer

                    self._trainer = make_trainer(
                        self.config,
                        store=lambda: self.store,
                        registry=self.registry,
                        budget=self.budget,
                        pipeline=self.pipeline,
                        dataset_provider=self._dataset_provider,
                        fine_tuning_provider=self._fine_tuning_provider,
                        training_client=self._training_client,
                    )
        return self._trainer

    def _register_again(self, model: str) -> bool:
        """A student server answered 404 for ``model``: the fine-tuning provider registers it again
        where it can (a LoRA adapter of its own)."""
        again = getattr(self.trainer.fine_tuning_provider, "register_again", None)
        return bool(again(model)) if again is not None else False

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
        self,
        namespace: str | None = None,
        *,
        wait: bool = False,
        timeout: float | None = None,
        progress: bool | TextIO = True,
    ) -> list[TrainingRound]:
        """Run a training round now: poll jobs in flight, start jobs where enough data waits.

        Captures still queued are flushed first, so they take part.

        Args:
            namespace: only this namespace (default: every namespace with data).
            wait: return only when the jobs started or polled here have ended and their points
                are flipped (or ``timeout`` ran out).
            timeout: seconds to wait at most, with ``wait``.
            progress: with ``wait``, show the jobs' progress (phase, step/total, loss, examples per
                second, ETA): one line redrawn on standard error when it is a terminal (or on the
                stream given), else ``distillkit`` log lines at INFO. False: nothing.
        """
        self.flush(timeout)
        rounds = self.trainer.tick(namespace)
        if wait:
            from distillkit.training.progress import ProgressLine

            line = None if progress is False else ProgressLine(None if progress is True else progress)
            try:
                rounds = self.trainer.wait(rounds, timeout=timeout, progress=line)
            finally:
                if line is not None:
                    line.close()
        return rounds

    def close(self) -> None:
        """Stop training, flush captures and release the store. Do not use the Distiller afterwards."""
        self._closed = True
        self.stop()
        self._writer.close()
        self.wait_shadows(5.0)  # a check still asking the teacher after that is dropped
        if self._counters.folder is not None or self._stores.current is not None:
            try:
                self._counters.save()
            except Exception as exc:  # closing must not fail because the store did
                logger.warning("distillkit could not save its counters: %s", exc)
        self._stores.close()

    def _at_exit(self) -> None:
        """Interpreter exit: store what is queued and save the counters (routed requests included)."""
        if self._closed:
            return
        self._writer.close(timeout=10.0)
        try:
            if self._counters.folder is not None or self._stores.current is not None:
                self._counters.save()
        except Exception as exc:
            logger.warning("distillkit could not save its counters at exit: %s", exc)

    def _before_fork(self) -> None:
        """Release an embedded store we own, so that one forked worker can own it."""
        if self._counters.folder is not None and not self._closed:
            self._writer.flush(10.0)
            self._stores.release()

    def _after_fork_in_child(self) -> None:
        """A forked child starts clean: its own counters, writer and store handle; no scheduler."""
        self._counters.after_fork()
        self._stats.after_fork()
        self._writer.after_fork()
        self._open_lock = threading.RLock()
        self._stores.after_fork(self._open_lock)
        self._scheduler = None  # its thread stayed in the parent; start() starts one here


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
