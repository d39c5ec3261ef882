"""Redaction before capture: personal data masked in what the store keeps.

A redactor is any ``Callable[[str], str]``; give it to ``Distiller(redact=...)``. The capture sink
applies it to every text field of a teacher interaction before it is stored: the request's message
contents (text parts included), tool-call arguments, the answer and the query text. Fields it
changed are listed in the stored payload's ``redacted`` field.

Routing embeds the caller's own words, on the request path. That vector is stored only when the
redactor left the query unchanged; when it masked something in the query, the stored vector is
embedded again from the masked text, because a vector can be inverted into something close to the
words it came from. A redactor that raises drops that capture (never stores it unredacted).

Example:
    >>> pii("Mail jane.doe@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111.")
    'Mail [EMAIL] or call [PHONE], card [CARD].'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["Redactor", "luhn_valid", "pii", "redact_interaction"]

Redactor = Callable[[str], str]

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13 to 19 digits, optionally grouped by single spaces or dashes.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# An optional +country code, then digits with spaces, dots, dashes or brackets: 9 to 15 digits.
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d ().-]{6,}\d(?!\w)")


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (digits only) passes the Luhn check that payment card numbers carry."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if luhn_valid(digits) else match.group()


def _phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[PHONE]" if 9 <= len(digits) <= 15 else match.group()


def pii(text: str) -> str:
    """Mask e-mail addresses, payment card numbers (Luhn-checked) and phone numbers.

    Replacements: ``[EMAIL]``, ``[CARD]``, ``[PHONE]``. A long digit run that fails the Luhn check
    is not a card; a phone number has 9 to 15 digits (E.164 allows at most 15; fewer would catch dates).
    """
    text = _EMAIL.sub("[EMAIL]", text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)


def _content(redact: Redactor, content: Any) -> Any:
    if isinstance(content, str):
        return redact(content)
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part = {**part, "text": redact(part["text"])}
            if isinstance(part, dict) and isinstance(part.get("refusal"), str):
                part = {**part, "refusal": redact(part["refusal"])}
            out.append(part)
        return out
    return content


def _message(redact: Redactor, message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    out = dict(message)
    if "content" in out:
        out["content"] = _content(redact, out["content"])
    if isinstance(out.get("refusal"), str):
        out["refusal"] = redact(out["refusal"])
    calls = out.get("tool_calls")
    if isinstance(calls, list):
        out["tool_calls"] = [_tool_call(redact, call) for call in calls]
    return out


def _tool_call(redact: Redactor, call: Any) -> Any:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    return {**call, "function": {**function, "arguments": redact(function["arguments"])}}


def redact_interaction(
    redact: Redactor, query: str, messages: list[Any], response: dict[str, Any]
) -> tuple[str, list[Any], dict[str, Any], list[str]]:
    """Apply ``redact`` to every text field; also return the names of the fields it changed.

    Returns:
        ``(query, messages, response, changed)`` where ``changed`` lists some of ``"query"``,
        ``"messages"``, ``"response"``.
    """
    new_query = redact(query)
    new_messages = [_message(redact, m) for m in messages]
    new_response = _message(redact, response)
    changed = [
        name
        for name, before, after in (
            ("query", query, new_query),
            ("messages", messages, new_messages),
            ("response", response, new_response),
        )
        if before != after
    ]
    return new_query, new_messages, new_response, changed
