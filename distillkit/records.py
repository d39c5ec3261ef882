"""From an OpenAI request to what distillkit routes and stores, and from a response to a record.

Pure functions and small data classes, shared by the sync and async paths, the router, the
capture writer and the dataset providers.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distillkit.store.base import Vector

__all__ = [
    "Interaction",
    "StreamAssembler",
    "fingerprint",
    "jsonable",
    "query_text",
    "request_params",
    "response_message",
    "unroutable_reason",
]

#: Request keywords that are transport or distillkit details, never part of the stored task.
_TRANSPORT_KEYS = frozenset(
    {"messages", "stream", "stream_options", "extra_headers", "extra_query", "extra_body", "timeout", "distillkit"}
)
#: What defines a task apart from the user's words (DESIGN.md, "Routing").
_TASK_KEYS = ("tools", "tool_choice", "response_format", "functions", "function_call")
_INSTRUCTION_ROLES = ("system", "developer")
#: Finish reasons of an answer worth training on.
USABLE_FINISH_REASONS = frozenset({"stop", "tool_calls"})


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

    Headers are left out on purpose: they can carry credentials (rule 7).
    """
    return {k: jsonable(v) for k, v in kwargs.items() if k not in _TRANSPORT_KEYS and _given(v)}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return ""


def query_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text that identifies a request among others of its task: the last user message."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


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


def response_message(completion: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The first choice's assistant message as a dict, and its finish reason."""
    choices = getattr(completion, "choices", None) or []
    if not choices:
        return None, None
    choice = choices[0]
    message = choice.message
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [jsonable(call) for call in message.tool_calls]
    if getattr(message, "refusal", None):
        out["refusal"] = message.refusal
    return out, choice.finish_reason


class StreamAssembler:
    """Rebuilds the assistant message of a streamed completion from its chunks."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.content: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: Any) -> None:
        self.model = getattr(chunk, "model", None) or self.model
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = jsonable(usage)
        for choice in getattr(chunk, "choices", None) or []:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta is not None and delta.content:
                self.content.append(delta.content)
            for call in (delta.tool_calls if delta is not None else None) or []:
                slot = self.tool_calls.setdefault(
                    call.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                if call.id:
                    slot["id"] = call.id
                if call.function is not None:
                    slot["function"]["name"] += call.function.name or ""
                    slot["function"]["arguments"] += call.function.arguments or ""
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason

    def message(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None}
        if self.tool_calls:
            out["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return out


@dataclass
class Interaction:
    """One finished teacher call, as the capture writer receives it.

    ``vector`` is the routing embedding when the router computed one (reused, never recomputed).
    """

    namespace: str
    fingerprint: str
    query: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    response: dict[str, Any]
    teacher_model: str
    finish_reason: str | None
    usage: dict[str, Any] | None = None
    vector: Vector | None = None
    created_at: float = field(default_factory=time.time)
    #: Fields a redactor changed before capture (``"query"``, ``"messages"``, ``"response"``).
    redacted: list[str] = field(default_factory=list)

    @property
    def trainable(self) -> bool:
        """Complete and successful: worth training a student on."""
        return self.finish_reason in USABLE_FINISH_REASONS

    def payload(self) -> dict[str, Any]:
        """The stored payload (DESIGN.md, "Data model"); ``indexed`` starts False."""
        return {
            "namespace": self.namespace,
            "fingerprint": self.fingerprint,
            "query": self.query,
            "messages": self.messages,
            "params": self.params,
            "response": self.response,
            "teacher_model": self.teacher_model,
            "usage": self.usage,
            "created_at": self.created_at,
            "indexed": False,
            "distilled_model": None,
            "job_id": None,
            "count": 1,
            "redacted": list(self.redacted),
        }
