"""The student's own confidence in an answer: the lowest log-probability of the tokens it chose.

A student that hesitates on one token (which intent, which amount) gives that token a low
probability; :func:`confidence` is the minimum of the answer's token log-probabilities (0 is
certain). For JSON answers only the tokens inside *values* count: keys, quotes and punctuation
are always near-certain and would hide nothing, while a value copied wrongly is where an
extraction fails. The student is asked for ``logprobs`` of its sampled tokens (OpenAI, vLLM and
the local llama.cpp student return them at little cost); a server that refuses them is asked
without them from then on (the signal is then absent and similarity decides alone).

Like every signal, confidence decides only through the acceptance fitted to the namespace's labels
(:mod:`distillkit.routing.acceptance`): no fixed cut-off is assumed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["StudentAnswer", "confidence", "json_value_mask", "strip_logprobs"]


@dataclass(frozen=True)
class StudentAnswer:
    """The student's assistant message and its confidence (None without token log-probabilities)."""

    message: Mapping[str, Any] | None
    confidence: float | None = None


def json_value_mask(text: str) -> list[bool]:
    """For each character of a JSON text, whether it lies inside a value (a string value's
    characters, a number, ``true``/``false``/``null``), not a key or punctuation."""
    mask = [False] * len(text)
    stack: list[str] = []  # "{" or "["
    expect_key = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            start, i = i, i + 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            is_key = expect_key and bool(stack) and stack[-1] == "{"
            if not is_key:
                for j in range(start + 1, min(i, len(text))):
                    mask[j] = True
            expect_key = False
        elif ch in "{[":
            stack.append(ch)
            expect_key = ch == "{"
        elif ch in "}]":
            if stack:
                stack.pop()
        elif ch == ",":
            expect_key = bool(stack) and stack[-1] == "{"
        elif ch == ":":
            expect_key = False
        elif not ch.isspace():
            mask[i] = True  # numbers, true, false, null
        i += 1
    return mask


def _tokens(completion: Any) -> Sequence[Any] | None:
    choices = getattr(completion, "choices", None) or []
    logprobs = getattr(choices[0], "logprobs", None) if choices else None
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    return content if content else None


def confidence(completion: Any, *, json_values: bool = False) -> float | None:
    """The lowest log-probability among the answer's tokens (only JSON values' with ``json_values``).

    None when the completion carries no token log-probabilities. An answer whose JSON has no value
    at all counts all its tokens.
    """
    tokens = _tokens(completion)
    if tokens is None:
        return None
    values = [float(getattr(t, "logprob", 0.0)) for t in tokens]
    if json_values:
        pieces = [str(getattr(t, "token", "")) for t in tokens]
        mask = json_value_mask("".join(pieces))
        chosen, at = [], 0
        for piece, value in zip(pieces, values, strict=True):
            if any(mask[at : at + len(piece)]):
                chosen.append(value)
            at += len(piece)
        values = chosen or values
    return min(values) if values else None


def strip_logprobs(completion: Any) -> None:
    """Remove the token log-probabilities distillkit asked for, before the caller sees the answer."""
    for choice in getattr(completion, "choices", None) or []:
        if getattr(choice, "logprobs", None) is not None:
            choice.logprobs = None
