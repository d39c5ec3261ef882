"""The request path: prepare → route → student | teacher → deliver.

Every intercepted call comes here through :meth:`Pipeline.handle` (sync) or
:meth:`Pipeline.ahandle` (async). Both run the same plain helpers and differ only where they
await: prepare the request, decide, call the student or the teacher, hand back the response (a
stream is proxied), count it, and queue the teacher's answer for capture.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from distillkit._context import internal_call
from distillkit.capture.sink import Captured
from distillkit.routing.agreement import is_json
from distillkit.routing.confidence import StudentAnswer, confidence, strip_logprobs
from distillkit.routing.request import Request, RouteInfo, attach
from distillkit.serving import LLMProvider, SameClientProvider
from distillkit.streams import AsyncStreamProxy, StreamAssembler, StreamProxy, response_message

if TYPE_CHECKING:
    from distillkit.capture.writer import CaptureWriter
    from distillkit.config import DistillConfig
    from distillkit.events import Events
    from distillkit.options import Options
    from distillkit.routing.router import Router
    from distillkit.routing.shadow import ShadowChecks
    from distillkit.stats import Stats

__all__ = ["Intercepted", "Pipeline", "describe"]

logger = logging.getLogger("distillkit")

#: Request headers that carry the caller's credentials (kept from a separate distilled server).
_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "openai-organization", "openai-project"})


@dataclass
class Intercepted:
    """A call distillkit handles: the client, the request without our keyword, merged options."""

    client: Any
    kwargs: dict[str, Any]
    options: Options


class Pipeline:
    """Answers intercepted calls with the parts the :class:`~distillkit.Distiller` built."""

    def __init__(
        self,
        config: DistillConfig,
        router: Router,
        llm_provider: LLMProvider,
        shadows: ShadowChecks,
        writer: CaptureWriter[Captured],
        stats: Stats,
        events: Events,
    ) -> None:
        self.config = config
        self.router = router
        #: Where the student answers.
        self.llm_provider = llm_provider
        self.shadows = shadows
        self._writer = writer
        self._stats = stats
        self._events = events
        self._clients: dict[bool, weakref.ref[Any]] = {}
        #: Ask the student for its tokens' log-probabilities (off once its server refused them).
        self._logprobs = True

    def last_client(self, *, asynchronous: bool = False) -> Any:
        """The most recent caller client (sync or async) seen here, if it still exists.

        The promotion gate asks a candidate model through the same provider and client routed
        requests use.
        """
        ref = self._clients.get(asynchronous)
        return ref() if ref is not None else None

    def _seen(self, client: Any, asynchronous: bool) -> None:
        current = self._clients.get(asynchronous)
        if current is None or current() is not client:
            with contextlib.suppress(TypeError):  # a client without weak references is not kept
                self._clients[asynchronous] = weakref.ref(client)

    # --- the two entry points ---------------------------------------------------------------

    def handle(self, call: Intercepted, create: Callable[..., Any]) -> Any:
        """Answer one intercepted synchronous call (``create`` sends it to the teacher)."""
        self._seen(call.client, False)
        request = self._prepare(call)
        info = self.router.decide(request)
        if info.routed:
            try:
                result = self._ask(call.client, self._student_kwargs(request))
            except Exception as exc:
                self._student_failed(request, exc)
            else:
                if self._checked(request, result):
                    return self._routed(request, result, create, asynchronous=False)
        result = create(**request.kwargs)
        delivered = self._deliver(request, result, student=False)
        if request.explore == "student":
            self._explore(call.client, request, result, asynchronous=False)
        elif request.withheld is not None and request.signals is not None:
            self.shadows.label_withheld(
                request.namespace, _snapshot(request.kwargs), request.withheld, result, request.signals
            )
        return delivered

    async def ahandle(self, call: Intercepted, create: Callable[..., Any]) -> Any:
        """Answer one intercepted asynchronous call; embedding and search run off the event loop."""
        self._seen(call.client, True)
        request = self._prepare(call)
        if request.route and not self.router.registry.fresh:
            # Reading the registry may open the store (seconds, the first time): not on the event loop.
            await asyncio.to_thread(self.router.active_model, request)
        if self.router.needs_lookup(request):
            info = await asyncio.to_thread(self.router.decide, request)
        else:
            info = self.router.decide(request)
        if info.routed:
            try:
                result = await self._aask(call.client, self._student_kwargs(request))
            except Exception as exc:
                self._student_failed(request, exc)
            else:
                if self._checked(request, result):
                    return self._routed(request, result, create, asynchronous=True)
        result = await create(**request.kwargs)
        delivered = self._deliver(request, result, student=False)
        if request.explore == "student":
            self._explore(call.client, request, result, asynchronous=True)
        elif request.withheld is not None and request.signals is not None:
            self.shadows.label_withheld(
                request.namespace, _snapshot(request.kwargs), request.withheld, result, request.signals
            )
        return delivered

    # --- plain helpers, shared by both --------------------------------------------------------

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

    def student_answer(self, client: Any, kwargs: dict[str, Any]) -> StudentAnswer:
        """Ask the student (``kwargs["model"]``) as a routed request would, with its confidence:
        the promotion gate's and exploration's way in."""
        kwargs = self._with_logprobs(kwargs)
        return _answer(self._ask(client, kwargs), kwargs)

    async def astudent_answer(self, client: Any, kwargs: dict[str, Any]) -> StudentAnswer:
        """:meth:`student_answer` for async clients."""
        kwargs = self._with_logprobs(kwargs)
        return _answer(await self._aask(client, kwargs), kwargs)

    def _with_logprobs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The student's request asking for its sampled tokens' log-probabilities (its confidence),
        unless it streams or its server refused them; they are removed before a caller sees them."""
        if not self._logprobs or kwargs.get("stream") is True:
            return kwargs
        return {**kwargs, "logprobs": True, "top_logprobs": 0}

    def _ask(self, client: Any, kwargs: dict[str, Any]) -> Any:
        """The student's answer; without token log-probabilities from a server that refuses them."""
        try:
            return self.llm_provider.create(client, kwargs)
        except Exception as exc:
            if not self._refused_logprobs(kwargs, exc):
                raise
            return self.llm_provider.create(client, _without_logprobs(kwargs))

    async def _aask(self, client: Any, kwargs: dict[str, Any]) -> Any:
        try:
            return await self.llm_provider.acreate(client, kwargs)
        except Exception as exc:
            if not self._refused_logprobs(kwargs, exc):
                raise
            return await self.llm_provider.acreate(client, _without_logprobs(kwargs))

    def _refused_logprobs(self, kwargs: dict[str, Any], exc: Exception) -> bool:
        """True (and never asked again) when the student's server turned down the log-probabilities
        distillkit asked for: then similarity decides without the student's confidence."""
        if "logprobs" not in kwargs or getattr(exc, "status_code", None) != 400:
            return False
        logger.warning("distillkit: the student's server refused logprobs (%s); asking without them", describe(exc))
        self._logprobs = False
        return True

    def _student_kwargs(self, request: Request, model: str | None = None) -> dict[str, Any]:
        assert request.info is not None and request.info.model is not None
        kwargs = {**request.kwargs, "model": model or request.info.model}
        if request.raw is None:  # a raw response's body reaches the caller as it came
            kwargs = self._with_logprobs(kwargs)
        headers = kwargs.get("extra_headers")
        if isinstance(headers, dict) and not isinstance(self.llm_provider, SameClientProvider):
            # The caller's credentials are for its own API: another server (and its own key) serves
            # the distilled model, so they must not travel there, nor override that key.
            kwargs["extra_headers"] = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
        return kwargs

    def _student_failed(self, request: Request, exc: BaseException) -> None:
        assert request.info is not None
        logger.warning(
            "distillkit: distilled model %s failed (%s); the teacher answers", request.info.model, describe(exc)
        )
        self._stats.add(request.namespace, distilled_failures=1)
        request.info = RouteInfo(
            False,
            request.namespace,
            request.teacher_model,
            f"distilled model failed: {describe(exc)}",
            request.info.similarity,
            request.info.neighbour_id,
            request.info.fingerprint,
        )

    def _checked(self, request: Request, result: Any) -> bool:
        """Whether the student's answer may be delivered: True, or False once the teacher must answer.

        The student's confidence is read from its tokens' log-probabilities (then removed from
        the answer). Where the router asked for them, two checks apply: the cross-check (answers
        repeat: :attr:`Signals.expected`; the answer must be one its nearest trained neighbours
        got from the teacher) and the confidence the fitted acceptance needs
        (:attr:`Signals.min_confidence`). The student's tokens are counted either way. A streamed
        answer is delivered as it comes, unchecked (the router routes none that needs the
        confidence check).
        """
        signals, info = request.signals, request.info
        if signals is None or request.stream or info is None:
            return True
        completion = result.parse() if request.raw is not None else result  # parse() is cached
        message, _ = response_message(completion)
        signals = request.signals = replace(
            signals, confidence=confidence(completion, json_values=is_json(request.kwargs))
        )
        strip_logprobs(completion)
        if not signals.consistent(message):
            self._stats.add(request.namespace, cross_check_failures=1)
            why = "student answer differs from its neighbours'"
        elif not signals.sure():
            self._stats.add(request.namespace, unsure=1)
            why = "student unsure of its answer"
            request.withheld = message
        else:
            return True
        self._stats.add_usage(request.namespace, str(info.model), getattr(completion, "usage", None))
        request.info = replace(info, routed=False, model=request.teacher_model, reason=why)
        return False

    def _routed(self, request: Request, result: Any, create: Callable[..., Any], *, asynchronous: bool) -> Any:
        """Deliver the student's answer; maybe ask the teacher too, in the background, to compare."""
        delivered = self._deliver(request, result, student=True)
        if request.raw is None and not request.stream:
            if self.shadows.sample():
                self._shadow(request, result, create, asynchronous, "shadow")
            elif request.explore == "teacher":
                self._shadow(request, result, create, asynchronous, "explore")
        return delivered

    def _explore(self, client: Any, request: Request, result: Any, *, asynchronous: bool) -> None:
        """The teacher answered a would-be-routed request: ask the student too, in the background."""
        if request.raw is not None or request.stream or request.signals is None or request.student_model is None:
            return
        teacher, _ = response_message(result)
        kwargs = _snapshot(self._student_kwargs(request, request.student_model))
        signals = request.signals
        if asynchronous:

            async def astudent() -> StudentAnswer:
                return await self.astudent_answer(client, kwargs)

            self.shadows.astart_student(request.namespace, kwargs, teacher, astudent, signals)
            return

        def student() -> StudentAnswer:
            return self.student_answer(client, kwargs)

        self.shadows.start_student(request.namespace, kwargs, teacher, student, signals)

    def _shadow(
        self, request: Request, result: Any, create: Callable[..., Any], asynchronous: bool, source: str
    ) -> None:
        assert request.info is not None and request.info.model is not None
        signals = request.signals
        student, _ = response_message(result)
        kwargs = _snapshot(request.kwargs)
        namespace, model = request.namespace, request.info.model
        if asynchronous:

            async def ateacher() -> dict[str, Any] | None:
                with internal_call():
                    return response_message(await create(**kwargs))[0]

            self.shadows.astart(namespace, model, kwargs, student, ateacher, signals=signals, source=source)
            return

        def teacher() -> dict[str, Any] | None:
            with internal_call():
                return response_message(create(**kwargs))[0]

        self.shadows.start(namespace, model, kwargs, student, teacher, signals=signals, source=source)

    def _deliver(self, request: Request, result: Any, *, student: bool) -> Any:
        """Count, attach route info, proxy streams, queue captures; return what the caller gets."""
        info = request.info
        assert info is not None
        self._stats.add(request.namespace, requests=1, **{"routed" if student else "teacher": 1})
        if self._events.observed("decision"):
            self._events.emit("decision", info)
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
        messages = request.messages or []
        # Copy now: callers often append the answer to their own message list right after.
        snapshot = [dict(m) if isinstance(m, dict) else m for m in messages]
        self._writer.submit(Captured(request, snapshot, message, finish_reason, usage))


def _snapshot(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request as it was sent, for a check that runs later in the background.

    Callers often append the answer to their own ``messages`` (or edit it) right after the call;
    a check sharing that list would ask a different question.
    """
    messages = kwargs.get("messages")
    if isinstance(messages, list):
        return {**kwargs, "messages": copy.deepcopy(messages)}
    return dict(kwargs)


def _without_logprobs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in ("logprobs", "top_logprobs")}


def _answer(completion: Any, kwargs: dict[str, Any]) -> StudentAnswer:
    """The student's message and confidence, read from its completion."""
    return StudentAnswer(response_message(completion)[0], confidence(completion, json_values=is_json(kwargs)))


def describe(exc: BaseException) -> str:
    """An exception's type and HTTP status, for a log line."""
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__} {status}" if status else type(exc).__name__
