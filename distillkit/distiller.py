"""The :class:`Distiller`: owns configuration, store, embedder, router, capture and training.

Every intercepted call comes here through :meth:`Distiller.handle` (sync) or
:meth:`Distiller.ahandle` (async). Both run the same plain helpers and differ only where they
await: prepare the request, decide, call the student or the teacher, hand back the response
(a stream is proxied) and queue the teacher's answer for capture.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from distillkit.capture import CaptureWriter
from distillkit.config import DistillConfig
from distillkit.embedders import Embedder, make_embedder
from distillkit.errors import StoreError
from distillkit.intercept import Intercepted, internal_call
from distillkit.providers import CompatibleServerProvider, LLMProvider, SameClientProvider
from distillkit.records import Interaction, StreamAssembler, jsonable, request_params, response_message
from distillkit.router import ModelRegistry, Request, RouteInfo, Router, attach
from distillkit.shadow import DEMOTION_KIND, SHADOW_KIND, ShadowChecks
from distillkit.stats import NamespaceStats, Stats
from distillkit.store.base import EmbedderInfo, Point, Store
from distillkit.streams import AsyncStreamProxy, StreamProxy

if TYPE_CHECKING:
    from distillkit.training import DatasetProvider, FineTuningProvider, Trainer, TrainingRound, TrainingScheduler

__all__ = ["Distiller", "default_distiller", "set_default_distiller"]

logger = logging.getLogger("distillkit")

#: Record kinds kept beside the points: namespaces seen, and counters per Distiller instance.
NAMESPACE_KIND = "namespace"
STATS_KIND = "stats"

#: Request headers that carry the caller's credentials (kept from a separate distilled server).
_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "openai-organization", "openai-project"})

#: Hook names accepted by :meth:`Distiller.on`.
EVENTS = ("decision", "capture", "drop")


@dataclass
class _Captured:
    """What the request path hands the capture writer: cheap to make, finished off the hot path."""

    request: Request
    messages: list[Any]
    message: dict[str, Any] | None
    finish_reason: str | None
    usage: Any  # the SDK's usage object, or a dict from a stream; made JSON off the hot path


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
        embedder: an :class:`~distillkit.embedders.Embedder`; default: ``config.embedder``.
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
            before it is stored, e.g. :func:`distillkit.redact.pii`; the fields it changed are
            listed in the stored ``redacted`` field. A redacted query is embedded again from its
            masked text for storage (routing itself used the caller's words). A redactor that
            raises drops that capture instead of storing it unredacted.
        store_backoff: ``(first, most)`` seconds to wait before reopening a store that failed;
            the wait doubles after each failed reopen. A store given as ``store`` is never reopened.
        shadow_rate: share (0 to 1) of the requests the distilled model answered (not streamed,
            not raw) that are also sent to the teacher in the background to compare the answers
            (see :mod:`distillkit.shadow`); 0 (the default) turns shadow checks off.
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
        self.config = config if config is not None else DistillConfig.from_env()
        self._store = store
        self._owns_store = store is None  # only a store opened here can be reopened here
        self._embedder = embedder
        self._redact = redact
        self._open_lock = threading.RLock()
        self._store_retry_at = 0.0
        self._backoff_first, self._backoff_most = store_backoff
        self._backoff = self._backoff_first
        if llm_provider is None:
            llm_provider = (
                CompatibleServerProvider(self.config.distilled_base_url, self.config.distilled_api_key)
                if self.config.distilled_base_url
                else SameClientProvider()
            )
        self.llm_provider = llm_provider
        self._stats = Stats()
        # Counters are saved per Distiller instance so that `distillkit status`, run in another
        # process, can add up what every process routed and saved.
        self._instance = uuid.uuid4().hex[:12]
        self._stats_saved_at = time.monotonic()
        self._known_namespaces: set[str] = set()
        self._hooks: defaultdict[str, list[Callable[..., Any]]] = defaultdict(list)
        self.registry = ModelRegistry(lambda: self.store)
        self.shadows = ShadowChecks(
            lambda: self.store,
            self.registry,
            rate=shadow_rate,
            floor=shadow_floor,
            min_samples=shadow_min_samples,
        )
        self.router = Router(
            lambda: self.store,
            lambda: self.embedder,
            self.registry,
            self._lookup_failed,
            self.config.threshold,
            rule=self.config.routing_rule,
            neighbours=self.config.neighbours,
            agreement_margin=self.config.agreement_margin,
            veto_margin=self.config.veto_margin,
        )
        self._dataset_provider = dataset_provider
        self._fine_tuning_provider = fine_tuning_provider
        self._training_client = training_client
        self._trainer: Trainer | None = None
        self._scheduler: TrainingScheduler | None = None
        self._writer: CaptureWriter[_Captured] = CaptureWriter(
            self._write_batch,
            max_queue=self.config.capture_queue_size,
            batch_size=self.config.capture_batch_size,
            on_drop=self._dropped,
        )

    @classmethod
    def from_env(cls, **overrides: Any) -> Distiller:
        """A Distiller configured from the environment and ``.env`` (overrides win)."""
        return cls(DistillConfig.from_env(**overrides))

    def __repr__(self) -> str:
        return f"Distiller({self.config!r})"

    # --- components, opened on first use -----------------------------------------------------

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
        if self._store is None:
            with self._open_lock:
                if self._store is None:
                    if time.monotonic() < self._store_retry_at:
                        raise StoreError("the store failed recently; retrying soon")
                    try:
                        self._store = self._open_store()
                    except StoreError:
                        self._schedule_reopen()
                        raise
                    if self._backoff != self._backoff_first:
                        logger.warning("distillkit: the store is back; capture and routing resume")
                    self._backoff = self._backoff_first
        return self._store

    def _schedule_reopen(self) -> None:
        """Wait before the next open, longer after each failure (under ``_open_lock``)."""
        self._store_retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_most)

    def _store_failed(self, exc: BaseException, failed: Store | None = None) -> None:
        """A store operation failed: close our store, so that it is reopened after a backoff.

        A folder deleted, replaced or closed underneath us, or a server gone away, is then
        picked up again once it is back, without a restart.

        Args:
            exc: what the store raised; only a :class:`StoreError` counts.
            failed: the store object that raised, when known: a late failure of a store
                already replaced must not close its replacement.
        """
        if not isinstance(exc, StoreError) or not self._owns_store:
            return
        with self._open_lock:
            if failed is not None and failed is not self._store:
                return
            store, self._store = self._store, None
            if store is None:
                return
            self._known_namespaces.clear()  # a store reopened empty must learn them again
            logger.warning("distillkit: the store failed (%s); reopening it later", exc)
            self._schedule_reopen()
            try:
                store.close()
            except Exception as close_exc:  # it is broken already: releasing it is all we want
                logger.debug("distillkit: closing the failed store: %s", close_exc)

    def _open_store(self) -> Store:
        embedder = self.embedder
        info = EmbedderInfo(embedder.name, embedder.dim)
        if self.config.qdrant_url:
            from distillkit.store.server import ServerStore

            return ServerStore(info, url=self.config.qdrant_url, api_key=self.config.qdrant_api_key)
        from distillkit.store.edge import EdgeStore

        return EdgeStore(self.config.path, info)

    # --- hooks and visibility -----------------------------------------------------------------

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Call ``callback`` on an event; a failing callback is logged, never raised.

        Events: ``"decision"`` (a :class:`~distillkit.router.RouteInfo`, on the request path),
        ``"capture"`` (an :class:`~distillkit.records.Interaction`, from the writer thread, once
        stored), ``"drop"`` (the namespace and the reason, when a capture was lost).
        """
        if event not in EVENTS:
            from distillkit.errors import ConfigError

            raise ConfigError(f"Unknown event {event!r}.", variable="event", fix=f"Use one of {', '.join(EVENTS)}.")
        self._hooks[event].append(callback)
        return callback

    def _emit(self, event: str, *args: Any) -> None:
        for callback in self._hooks.get(event, ()):
            try:
                callback(*args)
            except Exception:
                logger.warning("distillkit %r hook %r failed", event, callback, exc_info=True)

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
        namespaces = set(store.list_records(NAMESPACE_KIND)) | set(self.registry.all())
        demotions = store.list_records(DEMOTION_KIND)
        namespaces |= set(demotions)
        shadows: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        for record in store.list_records(SHADOW_KIND).values():
            if isinstance(record.get("namespace"), str) and isinstance(record.get("model"), str):
                shadows[record["namespace"]][record["model"]] = {
                    "samples": record.get("samples", 0),
                    "mean_agreement": record.get("mean_agreement"),
                }
        jobs = self.trainer.jobs()
        totals: dict[str, NamespaceStats] = {}
        for record in store.list_records(STATS_KIND).values():
            ns = record.get("namespace")
            if isinstance(ns, str):
                namespaces.add(ns)
                totals[ns] = _merge(totals.get(ns, NamespaceStats()), record)
        report = {}
        for ns in sorted(namespaces | set(jobs)):
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
                **counters.as_dict(),
            }
        return report

    def _save_stats(self, *, every: float = 0.0) -> None:
        if time.monotonic() - self._stats_saved_at < every:
            return
        self._stats_saved_at = time.monotonic()
        for ns, counters in self._stats.snapshot().items():
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
                    )
        return self._trainer

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

        return OpenAIFineTuningProvider(self._training_client)

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
        self.stop()
        self._writer.close()
        self.wait_shadows(5.0)  # a check still asking the teacher after that is dropped
        if self._store is not None:
            try:
                self._save_stats()
            except Exception as exc:  # closing must not fail because the store did
                logger.warning("distillkit could not save its counters: %s", exc)
        if self._store is not None:
            try:
                self._store.close()
            except StoreError as exc:  # a folder deleted underneath: nothing left to release
                logger.warning("distillkit could not close the store cleanly: %s", exc)

    # --- the request path ---------------------------------------------------------------------

    def _prepare(self, call: Intercepted) -> Request:
        options, config = call.options, self.config
        headers = call.kwargs.get("extra_headers")
        raw = headers.get("X-Stainless-Raw-Response") if isinstance(headers, dict) else None
        return Request(
            kwargs=call.kwargs,
            namespace=options.namespace or config.namespace,
            threshold=options.threshold,
            route=config.route if options.route is None else options.route,
            capture=config.capture if options.capture is None else options.capture,
            key=options.key,
            raw=raw,
        )

    def handle(self, call: Intercepted, create: Callable[..., Any]) -> Any:
        """Answer one intercepted synchronous call (``create`` sends it to the teacher)."""
        request = self._prepare(call)
        info = self.router.decide(request)
        if info.routed:
            try:
                result = self.llm_provider.create(call.client, self._student_kwargs(request))
            except Exception as exc:
                self._student_failed(request, exc)
            else:
                delivered = self._deliver(request, result, student=True)
                if self._shadowed(request):
                    self._shadow(request, result, create)
                return delivered
        return self._deliver(request, create(**request.kwargs), student=False)

    async def ahandle(self, call: Intercepted, create: Callable[..., Any]) -> Any:
        """Answer one intercepted asynchronous call; embedding and search run off the event loop."""
        request = self._prepare(call)
        if self.router.needs_lookup(request):
            info = await asyncio.to_thread(self.router.decide, request)
        else:
            info = self.router.decide(request)
        if info.routed:
            try:
                result = await self.llm_provider.acreate(call.client, self._student_kwargs(request))
            except Exception as exc:
                self._student_failed(request, exc)
            else:
                delivered = self._deliver(request, result, student=True)
                if self._shadowed(request):
                    self._ashadow(request, result, create)
                return delivered
        return self._deliver(request, await create(**request.kwargs), student=False)

    # --- shadow checks (background) -----------------------------------------------------------

    def _shadowed(self, request: Request) -> bool:
        """Whether this routed request gets a shadow check (not streamed, not raw, sampled)."""
        return request.raw is None and not request.stream and self.shadows.sample()

    def _shadow(self, request: Request, result: Any, create: Callable[..., Any]) -> None:
        assert request.info is not None and request.info.model is not None
        student, _ = response_message(result)
        kwargs = dict(request.kwargs)

        def teacher() -> dict[str, Any] | None:
            with internal_call():
                return response_message(create(**kwargs))[0]

        self.shadows.start(request.namespace, request.info.model, kwargs, student, teacher)

    def _ashadow(self, request: Request, result: Any, create: Callable[..., Any]) -> None:
        assert request.info is not None and request.info.model is not None
        student, _ = response_message(result)
        kwargs = dict(request.kwargs)

        async def teacher() -> dict[str, Any] | None:
            with internal_call():
                return response_message(await create(**kwargs))[0]

        self.shadows.astart(request.namespace, request.info.model, kwargs, student, teacher)

    def _student_kwargs(self, request: Request) -> dict[str, Any]:
        assert request.info is not None and request.info.model is not None
        kwargs = {**request.kwargs, "model": request.info.model}
        headers = kwargs.get("extra_headers")
        if isinstance(headers, dict) and not isinstance(self.llm_provider, SameClientProvider):
            # The caller's credentials are for its own API: another server (and its own key) serves
            # the distilled model, so they must not travel there, nor override that key.
            kwargs["extra_headers"] = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
        return kwargs

    def _student_failed(self, request: Request, exc: BaseException) -> None:
        assert request.info is not None
        logger.warning(
            "distillkit: distilled model %s failed (%s); the teacher answers", request.info.model, _describe(exc)
        )
        self._stats.add(request.namespace, distilled_failures=1)
        request.info = RouteInfo(
            False,
            request.namespace,
            request.teacher_model,
            f"distilled model failed: {_describe(exc)}",
            request.info.similarity,
            request.info.neighbour_id,
            request.info.fingerprint,
        )

    def _lookup_failed(self, namespace: str, exc: BaseException) -> None:
        logger.warning("distillkit: routing lookup failed (%s); the teacher answers", _describe(exc))
        self._stats.add(namespace, store_errors=1)
        self._store_failed(exc)

    def _deliver(self, request: Request, result: Any, *, student: bool) -> Any:
        """Count, attach route info, proxy streams, queue captures; return what the caller gets."""
        info = request.info
        assert info is not None
        self._stats.add(request.namespace, requests=1, **{"routed" if student else "teacher": 1})
        if self._hooks.get("decision"):
            self._emit("decision", info)
        if request.raw in ("stream", "raw"):
            return result  # a streamed raw response is read by the caller's own code: not captured
        if request.stream and request.raw is None:
            done = self._stream_done(request, student)
            proxy_type = AsyncStreamProxy if hasattr(result, "__aiter__") else StreamProxy
            return proxy_type(result, done, info)
        attach(result, info)
        if request.stream:
            return result  # raw + stream: the caller parses the stream itself; not captured
        completion = result.parse() if request.raw is not None else result  # parse() is cached
        if completion is not result:
            attach(completion, info)
        message, finish_reason = response_message(completion)
        self._finished(request, student, message, finish_reason, getattr(completion, "usage", None))
        return result

    def _stream_done(self, request: Request, student: bool) -> Callable[[StreamAssembler, bool], None]:
        def done(assembler: StreamAssembler, completed: bool) -> None:
            if completed:
                self._finished(request, student, assembler.message(), assembler.finish_reason, assembler.usage)

        return done

    def _finished(
        self,
        request: Request,
        student: bool,
        message: dict[str, Any] | None,
        finish_reason: str | None,
        usage: Any,
    ) -> None:
        model = request.info.model if student and request.info else request.teacher_model
        self._stats.add_usage(request.namespace, str(model), usage, request.teacher_model if student else None)
        if student or not request.capture or message is None:
            return
        messages = request.kwargs.get("messages") or []
        # Copy now: callers often append the answer to their own message list right after.
        snapshot = [dict(m) if isinstance(m, dict) else m for m in messages]
        self._writer.submit(_Captured(request, snapshot, message, finish_reason, usage))

    # --- the capture writer (background thread) ---------------------------------------------

    def _dropped(self, item: _Captured, reason: str) -> None:
        self._stats.add(item.request.namespace, dropped=1)
        self._emit("drop", item.request.namespace, reason)

    def _write_batch(self, batch: Sequence[_Captured]) -> None:
        interactions: list[Interaction] = []
        for item in batch:
            request = item.request
            interaction = Interaction(
                namespace=request.namespace,
                fingerprint=request.fingerprint,
                query=request.query,
                messages=jsonable(item.messages),
                params=request_params(request.kwargs),
                response=jsonable(item.message or {}),
                teacher_model=request.teacher_model,
                finish_reason=item.finish_reason,
                usage=jsonable(item.usage),
                vector=request.vector,
            )
            if not interaction.trainable or not interaction.query.strip():
                # No query text (no user message): nothing could ever be routed to it, and an
                # empty text embeds to a vector of NaNs.
                self._stats.add(request.namespace, skipped=1)
            elif self._redact is None or self._redacted(interaction):
                interactions.append(interaction)
            else:
                self._dropped(item, "redaction failed")
        if not interactions:
            return
        missing = [i for i in interactions if i.vector is None]
        if missing:
            # The query as it is stored (masked, when the redactor changed it).
            vectors = self.embedder.embed([i.query for i in missing])
            for interaction, vector in zip(missing, vectors, strict=True):
                interaction.vector = vector
        finite = []
        for interaction in interactions:
            if np.isfinite(np.asarray(interaction.vector, dtype=np.float32)).all():
                finite.append(interaction)
            else:  # never store a vector that no search can compare with
                logger.warning("distillkit: the embedder returned a non-finite vector; the capture is skipped")
                self._stats.add(interaction.namespace, skipped=1)
        interactions = finite
        if not interactions:
            return
        store = self.store  # raises StoreError while it is away: the batch is dropped and counted
        try:
            self._store_interactions(store, interactions)
        except StoreError as exc:
            self._store_failed(exc, store)
            raise  # the writer logs it and counts the batch as dropped
        try:
            self._save_stats(every=5.0)
        except StoreError as exc:  # the points are stored; only the counters wait for next time
            logger.warning("distillkit could not save its counters: %s", exc)
            self._store_failed(exc, store)

    def _redacted(self, interaction: Interaction) -> bool:
        """Apply the redactor in place; False (logged) when it raised."""
        from distillkit.redact import redact_interaction

        assert self._redact is not None
        try:
            query, messages, response, changed = redact_interaction(
                self._redact, interaction.query, interaction.messages, interaction.response
            )
        except Exception as exc:
            logger.warning("distillkit: the redact hook failed (%s); the capture is dropped", type(exc).__name__)
            return False
        # The query text is the last user message: kept in step with the redacted messages.
        interaction.query, interaction.messages, interaction.response = query, messages, response
        interaction.redacted = changed
        if "query" in changed:
            # Re-embedded from the masked text by the writer: a vector can be inverted into
            # something close to the words it came from, so none is kept from the original.
            interaction.vector = None
        return True

    def _store_interactions(self, store: Store, interactions: Sequence[Interaction]) -> None:
        """Insert new points; a near-duplicate of a stored one only bumps that one's ``count``."""
        threshold = self.config.dedup_threshold
        new_points: list[Point] = []
        stored: list[Interaction] = []
        new_vectors: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
        for interaction in interactions:
            vector = np.asarray(interaction.vector, dtype=np.float32)
            group = (interaction.namespace, interaction.fingerprint)
            if any(float(vector @ other) >= threshold for other in new_vectors[group]):
                self._stats.add(interaction.namespace, deduplicated=1)
                continue
            hits = store.search(
                vector.tolist(), namespace=interaction.namespace, fingerprint=interaction.fingerprint, limit=1
            )
            if hits and hits[0].score >= threshold:
                count = int(hits[0].payload.get("count") or 1) + 1
                store.set_payload([hits[0].id], {"count": count})
                self._stats.add(interaction.namespace, deduplicated=1)
                continue
            new_vectors[group].append(vector)
            new_points.append(Point(str(uuid.uuid4()), interaction.payload(), vector.tolist()))
            stored.append(interaction)
        if new_points:
            store.upsert(new_points)
        for interaction in stored:
            self._stats.add(interaction.namespace, captured=1)
            self._emit("capture", interaction)
        try:
            for namespace in {i.namespace for i in stored} - self._known_namespaces:
                store.put_record(NAMESPACE_KIND, namespace, {"first_seen": time.time()})
                self._known_namespaces.add(namespace)
        except StoreError as exc:  # the points are stored; the namespace is recorded next time
            logger.warning("distillkit could not record a namespace: %s", exc)
            self._store_failed(exc, store)


def _merge(total: NamespaceStats, saved: dict[str, Any]) -> NamespaceStats:
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


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__} {status}" if status else type(exc).__name__


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
