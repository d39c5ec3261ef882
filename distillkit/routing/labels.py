"""What the router saw, and what was measured: answers, answer classes, labels.

A :class:`Label` is one measured outcome (did the student answer a request as the teacher?) with
the routing signals at decision time; :class:`Signals` are those signals before the outcome is
known. :func:`answer_key` puts a teacher answer in a canonical form for comparing answers;
:func:`answer_class` names it briefly. The error budget (:mod:`distillkit.routing.budget`) keeps
labels and fits what to route from them (:mod:`distillkit.routing.acceptance`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Label", "Signals", "Source", "answer_class", "answer_key"]

Source = Literal["gate", "shadow", "explore"]


def answer_key(payload: Mapping[str, Any]) -> str | None:
    """A stored point's teacher answer in a canonical form, for comparing answers (None if absent).

    Content is compared with whitespace collapsed; tool calls by name and arguments (their ids
    differ on every call).
    """
    response = payload.get("response")
    if not isinstance(response, Mapping):
        return None
    content = response.get("content")
    text = " ".join(content.split()) if isinstance(content, str) else content
    calls = [
        (call.get("function") or {}) if isinstance(call, Mapping) else call for call in response.get("tool_calls") or []
    ]
    return json.dumps([text, calls], sort_keys=True, default=str)


def answer_class(key: str | None) -> str | None:
    """A short stable name for a teacher answer (:func:`answer_key`)."""
    return None if key is None else hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Label:
    """One measured outcome: what the router saw, and whether the student answered as the teacher.

    Attributes:
        similarity: cosine similarity of the nearest trained neighbour when it was decided.
        agreed: the student's answer counted as the teacher's.
        answer_class: :func:`answer_class` of that neighbour's teacher answer (None if it had none).
        source: ``"gate"``, ``"shadow"`` or ``"explore"``.
        at: when it was measured (``time.time()``).
    """

    similarity: float
    agreed: bool
    answer_class: str | None = None
    source: Source = "shadow"
    at: float = field(default_factory=time.time)

    def compact(self) -> list[Any]:
        return [round(float(self.similarity), 4), int(self.agreed), self.answer_class, self.source, round(self.at, 3)]

    @classmethod
    def from_compact(cls, row: Sequence[Any]) -> Label:
        similarity, agreed, klass, source, at = row
        return cls(float(similarity), bool(agreed), klass, source, float(at))


@dataclass(frozen=True)
class Signals:
    """What the router saw when it decided: the makings of a :class:`Label` once the outcome is known.

    Attributes:
        similarity: cosine similarity of the nearest trained neighbour.
        answer_class: :func:`answer_class` of its teacher answer.
        repeating: its answer repeats among the nearest neighbours (compare exactly).
        expected: with the cross-check, the answer classes the student's answer must be one of
            (the nearest trained neighbours' teacher answers); None where answers do not repeat.
    """

    similarity: float
    answer_class: str | None = None
    repeating: bool = False
    expected: frozenset[str] | None = None

    def consistent(self, answer: Mapping[str, Any] | None) -> bool:
        """Whether the student's ``answer`` (an assistant message) passes the cross-check."""
        if self.expected is None:
            return True
        return answer is not None and answer_class(answer_key({"response": answer})) in self.expected
