"""Deterministic answers: what the simulator's teacher and students say, and the text helpers
shared by the endpoints.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    """What an answer function returns when plain text is not enough.

    Attributes:
        content: The assistant's text, or None (for a reply made only of tool calls).
        tool_calls: OpenAI-shaped tool calls, ``{"id", "type": "function", "function": {"name",
            "arguments"}}``. ``id`` and ``type`` may be left out (filled deterministically), and
            ``arguments`` may be a dict (serialised to JSON).
        finish_reason: Defaults to ``"tool_calls"`` when there are tool calls, else ``"stop"``.
        logprob: the log-probability of every token of ``content`` when the request asks for
            ``logprobs`` (the student's confidence, :mod:`distillkit.routing.confidence`).
    """

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    logprob: float = -0.01


#: An answer function: gets the parsed chat request body, returns the reply text or a :class:`Reply`.
AnswerFn = Callable[[dict[str, Any]], str | Reply]


def _text_of(content: Any) -> str:
    """Text of a message ``content``: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict) and "text" in part)
    return ""


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def _last_user_text(request: dict[str, Any]) -> str:
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _example_for_schema(schema: Any, text: str, depth: int = 0) -> Any:
    """A small value that fits a JSON schema, so ``json_schema`` replies parse as the caller expects."""
    if not isinstance(schema, dict) or depth > 8:
        return text
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _example_for_schema(schema[key][0], text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: _example_for_schema(sub, text, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return []
    if kind == "integer":
        return 0
    if kind == "number":
        return 0.0
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return text


def default_answer(request: dict[str, Any]) -> Reply:
    """The simulator's default, deterministic teacher answer.

    * With ``tools`` (and ``tool_choice`` not ``"none"``): calls the tool named by ``tool_choice``,
      or the first tool, with arguments ``{}``. Under ``"auto"`` it answers in text instead when
      the last message is already a tool result, so agent loops end.
    * With ``response_format`` ``json_object``: ``{"answer": <last user text>}``; with
      ``json_schema``: an object built from the schema's properties.
    * Otherwise: ``"Answer: <last user text>"``.

    Args:
        request: The parsed chat completion request body.

    Returns:
        The reply.
    """
    text = _last_user_text(request)
    tools = request.get("tools") or []
    tool_choice = request.get("tool_choice", "auto")
    messages = request.get("messages") or []
    last_role = messages[-1].get("role") if messages and isinstance(messages[-1], dict) else None
    if tools and tool_choice != "none":
        forced = tool_choice == "required" or isinstance(tool_choice, dict)
        if forced or last_role != "tool":
            name = None
            if isinstance(tool_choice, dict):
                name = (tool_choice.get("function") or {}).get("name")
            if name is None:
                first = tools[0] if isinstance(tools[0], dict) else {}
                name = (first.get("function") or {}).get("name") or first.get("name") or "tool"
            return Reply(tool_calls=[{"type": "function", "function": {"name": name, "arguments": "{}"}}])
    response_format = request.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_object":
            return Reply(content=json.dumps({"answer": text}))
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            value = _example_for_schema(schema, text) if schema else {"answer": text}
            if not isinstance(value, dict):
                value = {"answer": text}
            return Reply(content=json.dumps(value))
    return Reply(content=f"Answer: {text}")


def _wrong(reply: Reply) -> Reply:
    """Another answer than ``reply``, deterministic (:meth:`Simulator.student_wrong`)."""
    if reply.tool_calls:
        calls = [
            {**call, "function": {**call["function"], "arguments": json.dumps({"wrong": True})}}
            for call in reply.tool_calls
        ]
        return Reply(content=reply.content, tool_calls=calls, finish_reason=reply.finish_reason)
    content = reply.content or ""
    try:
        json.loads(content)
    except ValueError:
        words = content.split()
        return Reply(content="wrong: " + " ".join(reversed(words)), finish_reason=reply.finish_reason)
    return Reply(content=json.dumps({"wrong": content}), finish_reason=reply.finish_reason)  # still JSON


def _normalise_reply(raw: str | Reply | None, salt: str) -> Reply:
    """Turn an answer function's output into a complete :class:`Reply` (ids, JSON args, finish)."""
    reply = Reply(content=raw) if raw is None or isinstance(raw, str) else copy.deepcopy(raw)
    if not isinstance(reply, Reply):
        raise TypeError(f"answer function must return str or Reply, got {type(raw).__name__}")
    if reply.tool_calls:
        calls = []
        for i, call in enumerate(reply.tool_calls):
            function = dict(call.get("function") or {})
            arguments = function.get("arguments", "{}")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            function["arguments"] = arguments
            function.setdefault("name", "tool")
            call_id = (
                call.get("id")
                or "call_" + hashlib.sha256(f"{salt}|{i}|{function['name']}|{arguments}".encode()).hexdigest()[:24]
            )
            calls.append({"id": call_id, "type": call.get("type", "function"), "function": function})
        reply.tool_calls = calls
    else:
        reply.tool_calls = None
    if reply.finish_reason is None:
        reply.finish_reason = "tool_calls" if reply.tool_calls else "stop"
    return reply
