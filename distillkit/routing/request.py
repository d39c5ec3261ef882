"""One intercepted request as distillkit sees it, and how it was answered.

* :class:`Request`: the call's keywords and the options that apply to it, with what routing
  needs from it: the ``query`` text to embed, the task's ``fingerprint``, why it cannot be routed.
* :class:`RouteInfo`: the decision, attached to the response the caller gets (:func:`route_info`).
* Pure functions from request keywords to what is stored (``request_params``, ``jsonable``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from distillkit.options import KeyFunction
    from distillkit.routing.labels import Signals

__all__ = [
    "Request",
    "RouteInfo",
    "as_message",
    "attach",
    "fingerprint",
    "jsonable",
    "query_text",
    "request_params",
    "route_info",
    "unroutable_reason",
]

logger = logging.getLogger("distillkit")

#: Request keywords that are transport or distillkit details, never part of the stored task.
_TRANSPORT_KEYS = frozenset(
    {"messages", "stream", "stream_options", "extra_headers", "extra_query", "extra_body", "timeout", "distillkit"}
)
#: What defines a task apart from the user's words.
_TASK_KEYS = ("tools", "tool_choice", "response_format", "functions", "function_call")
_INSTRUCTION_ROLES = ("system", "developer")


def jsonable(value: Any) -> Any:
    """A JSON-serialisable copy: pydantic models dumped, tuples listed, unknown objects as strings."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return jsonable(dump(exclude_unset=True))
    if isinstance(value, (set, frozenset)) or (hasattr(value, "__iter__") and not isinstance(value, bytes)):
        return [jsonable(v) for v in value]
    return str(value)


def _given(value: Any) -> bool:
    """False for the SDK's ``omit`` / ``NOT_GIVEN`` sentinels."""
    return type(value).__name__ not in ("Omit", "NotGiven")


def request_params(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The request's parameters worth storing: everything but messages and transport details.

    Headers are left out on purpose: they can carry credentials.
    """
    return {k: jsonable(v) for k, v in kwargs.items() if k not in _TRANSPORT_KEYS and _given(v)}


def as_message(message: Any) -> Any:
    """A message as a plain dict: the SDK's own message objects (``resp.choices[0].message``,
    appended by the usual chat or tool-calling loop) are dumped; anything else is left as is."""
    if isinstance(message, Mapping):
        return message
    dump = getattr(message, "model_dump", None)
    if callable(dump):
        dumped = dump(exclude_none=True)
        if isinstance(dumped, Mapping):
            return dumped
    return message


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return ""


def query_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text that identifies a request among others of its task: the whole conversation.

    The last user message comes first (its words weigh most, and a one-question conversation
    gives just its text), then every other turn but the instructions, newest first, each marked
    with its role. Two conversations that end in the same words but differ before get different
    texts. An empty string when there is no user message.
    """
    turns = [m for m in messages if isinstance(m, Mapping) and m.get("role") not in _INSTRUCTION_ROLES]
    last = next((i for i in range(len(turns) - 1, -1, -1) if turns[i].get("role") == "user"), None)
    if last is None:
        return ""
    text = _text_of(turns[last].get("content"))
    others = [
        f"{m.get('role')}: {words}"
        for i, m in reversed(list(enumerate(turns)))
        if i != last and (words := _turn_text(m))
    ]
    return "\n\n".join([text, *others]) if others else text


def _turn_text(message: Mapping[str, Any]) -> str:
    """A turn's words: its text, or for an assistant's tool calls their names and arguments."""
    words = _text_of(message.get("content"))
    calls = message.get("tool_calls")
    if isinstance(calls, Sequence) and not isinstance(calls, str):
        for call in calls:
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                words += f"\n{function.get('name')}({function.get('arguments')})"
    return words.strip()


def fingerprint(kwargs: Mapping[str, Any]) -> str:
    """A short hash of what defines the task: instructions, tools, output format, teacher model.

    Two requests with the same fingerprint differ only in the user's words (and the
    conversation so far), so a distilled model trained on one may answer the other.
    """
    messages = kwargs.get("messages") or []
    instructions = [
        [m.get("role"), _text_of(m.get("content"))]
        for m in messages
        if isinstance(m, Mapping) and m.get("role") in _INSTRUCTION_ROLES
    ]
    task = {
        "model": kwargs.get("model"),
        "instructions": instructions,
        **{k: jsonable(kwargs[k]) for k in _TASK_KEYS if k in kwargs and _given(kwargs[k])},
    }
    canonical = json.dumps(task, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def unroutable_reason(kwargs: Mapping[str, Any]) -> str | None:
    """Why a request must go to the teacher whatever the store says, or None if it may be routed."""
    n = kwargs.get("n")
    if _given(n) and isinstance(n, int) and n > 1:
        return "n>1"
    if _given(kwargs.get("logprobs")) and kwargs.get("logprobs"):
        return "logprobs"
    modalities = kwargs.get("modalities")
    if (_given(modalities) and modalities and "audio" in modalities) or (
        _given(kwargs.get("audio")) and kwargs.get("audio")
    ):
        return "audio output"
    messages = kwargs.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        return "no messages"
    for message in messages:
        if not isinstance(message, Mapping):
            return "malformed message"
        content = message.get("content")
        if isinstance(content, Sequence) and not isinstance(content, str):
            for part in content:
                if not isinstance(part, Mapping) or part.get("type") not in ("text", "refusal"):
                    return "non-text content"
    return None


@dataclass
class Request:
    """One intercepted call, resolved: the request keywords and the options that apply to it."""

    kwargs: dict[str, Any]
    namespace: str
    threshold: float | None  # set explicitly (call, scope or wrap); else calibrated or configured
    route: bool
    capture: bool
    key: KeyFunction | None = None
    raw: str | None = None  # None, "true" (with_raw_response) or "stream"/"raw" (streamed response)
    vector: np.ndarray | None = None
    info: RouteInfo | None = None
    #: What the router saw (for a label once the outcome is known), when it looked.
    signals: Signals | None = None
    #: Exploration: ``"teacher"`` (routed; also ask the teacher, in the background) or
    #: ``"student"`` (the teacher answers; also ask the student ``student_model``), or None.
    explore: str | None = None
    student_model: str | None = None
    #: The student's answer, routed but withheld for its low confidence: once the teacher has
    #: answered, the two make a label (where the confidence signal fails is worth knowing).
    withheld: dict[str, Any] | None = None
    #: Why the ``key=`` function gave no query text, when it raised.
    key_failed: str | None = None

    @property
    def stream(self) -> bool:
        return self.kwargs.get("stream") is True

    @property
    def teacher_model(self) -> str:
        return str(self.kwargs.get("model"))

    @functools.cached_property
    def messages(self) -> Any:
        """The request's messages, SDK message objects as dicts (what routing and capture read)."""
        messages = self.kwargs.get("messages")
        if isinstance(messages, Sequence) and not isinstance(messages, (str, bytes)):
            return [as_message(m) for m in messages]
        return messages

    @functools.cached_property
    def _routing_kwargs(self) -> dict[str, Any]:
        return {**self.kwargs, "messages": self.messages} if "messages" in self.kwargs else self.kwargs

    @functools.cached_property
    def fingerprint(self) -> str:
        return fingerprint(self._routing_kwargs)

    @functools.cached_property
    def query(self) -> str:
        messages = self.messages or []
        if self.key is not None:
            try:
                return str(self.key(messages))
            except Exception as exc:  # the user's function: it must not break the call
                self.key_failed = f"key function failed: {type(exc).__name__}"
                logger.warning("distillkit: the key= function raised %r; the teacher answers", exc)
                return ""  # no query text: not routed, not captured
        return query_text(messages)

    @functools.cached_property
    def unroutable(self) -> str | None:
        return unroutable_reason(self._routing_kwargs)


@dataclass(frozen=True)
class RouteInfo:
    """How a call was answered; see :func:`route_info`.

    Attributes:
        routed: True when the distilled model answered.
        namespace: the call's namespace.
        model: the model that answered (the distilled one, or the teacher).
        similarity: cosine similarity of the nearest trained neighbour, when one was looked up.
        neighbour_id: that neighbour's point id.
        reason: why: ``"similar request trained"``, ``"below threshold"``, ``"no distilled model"``,
            ``"routing off"``, ``"not routable: <why>"``, ``"distilled model failed: <error>"``,
            ``"neighbours agree"`` (the agreement rule), ``"student answer differs from its
            neighbours'"`` (the cross-check sent it to the teacher); once the error budget is fitted
            (:mod:`distillkit.routing.budget`): ``"within the error budget"``, ``"below fitted
            threshold"``, ``"over the error budget"``, ``"answer class last answered wrong"``,
            ``"answer class over the error budget"``; ``"lookup failed: <error>"`` (the store
            failed), ``"store busy: building its index"`` (the embedded store's index build
            outlasted ``DISTILLKIT_LOOKUP_TIMEOUT``).
        fingerprint: the task's fingerprint, when it was computed.
        agreeing: with the agreement rule, how many of the nearest trained neighbours share the
            nearest one's teacher answer (None with the top1 rule).
        vetoed_by: the untrained point whose different teacher answer sent the request back to
            the teacher (reason ``"untrained neighbour disagrees"``).
    """

    routed: bool
    namespace: str
    model: str | None
    reason: str
    similarity: float | None = None
    neighbour_id: str | None = None
    fingerprint: str | None = None
    agreeing: int | None = None
    vetoed_by: str | None = None


_infos: dict[int, RouteInfo] = {}


def attach(obj: Any, info: RouteInfo) -> None:
    """Remember how ``obj`` (a response the caller receives) was answered, for :func:`route_info`."""
    key = id(obj)
    _infos[key] = info
    try:
        weakref.finalize(obj, _infos.pop, key, None)
    except TypeError:  # an object without weak references: keep nothing rather than leak
        _infos.pop(key, None)


def route_info(response: Any) -> RouteInfo | None:
    """How a response of an intercepted call was answered, or None if distillkit did not see it.

    Works for ``ChatCompletion`` objects, streams and raw responses::

        completion = client.chat.completions.create(...)
        info = distillkit.route_info(completion)
        if info and info.routed:
            print(f"answered by {info.model} (similarity {info.similarity:.3f})")
    """
    own = getattr(response, "_self_route", None)  # stream proxies carry it themselves
    if isinstance(own, RouteInfo):
        return own
    return _infos.get(id(response))
