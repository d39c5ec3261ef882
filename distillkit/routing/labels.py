"""What the router saw, and what was measured: answers, answer classes, labels.

A :class:`Label` is one measured outcome (did the student answer a request as the teacher?) with
the routing signals at decision time; :class:`Signals` are those signals before the outcome is
known. Answers are compared in :mod:`distillkit.routing.agreement` (:func:`answer_key`,
:func:`answer_class` are re-exported here). The error budget (:mod:`distillkit.routing.budget`) keeps
labels and fits what to route from them (:mod:`distillkit.routing.acceptance`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from distillkit.routing.agreement import answer_class, answer_key

__all__ = ["Label", "Signals", "Source", "answer_class", "answer_key"]

Source = Literal["gate", "shadow", "explore"]


@dataclass(frozen=True)
class Label:
    """One measured outcome: what the router saw, and whether the student answered as the teacher.

    Attributes:
        similarity: cosine similarity of the nearest trained neighbour when it was decided.
        agreed: the student's answer counted as the teacher's.
        answer_class: :func:`answer_class` of that neighbour's teacher answer (None if it had none).
        source: ``"gate"``, ``"shadow"`` or ``"explore"``.
        at: when it was measured (``time.time()``).
        confidence: the student's own confidence in its answer (:mod:`distillkit.routing.confidence`),
            None where the student gave no token log-probabilities.
    """

    similarity: float
    agreed: bool
    answer_class: str | None = None
    source: Source = "shadow"
    at: float = field(default_factory=time.time)
    confidence: float | None = None

    def compact(self) -> list[Any]:
        confidence = None if self.confidence is None else round(float(self.confidence), 4)
        row = [round(float(self.similarity), 4), int(self.agreed), self.answer_class, self.source, round(self.at, 3)]
        return [*row, confidence]

    @classmethod
    def from_compact(cls, row: Sequence[Any]) -> Label:
        similarity, agreed, klass, source, at, *rest = row  # rows stored before confidence have 5 items
        confidence = rest[0] if rest else None
        return cls(
            float(similarity), bool(agreed), klass, source, float(at), None if confidence is None else float(confidence)
        )


@dataclass(frozen=True)
class Signals:
    """What the router saw when it decided: the makings of a :class:`Label` once the outcome is known.

    Attributes:
        similarity: cosine similarity of the nearest trained neighbour.
        answer_class: :func:`answer_class` of its teacher answer.
        repeating: its answer repeats among the nearest neighbours (compare exactly).
        expected: with the cross-check, the answer classes the student's answer must be one of
            (the nearest trained neighbours' teacher answers); None where answers do not repeat.
        min_confidence: the student's answer is delivered only if its confidence reaches this (the
            fitted acceptance routes on the student's confidence there); None: no such condition.
        confidence: the student's confidence in its answer, once it answered.
    """

    similarity: float
    answer_class: str | None = None
    repeating: bool = False
    expected: frozenset[str] | None = None
    min_confidence: float | None = None
    confidence: float | None = None

    def label(self, agreed: bool, source: Source) -> Label:
        """The label these signals make once the outcome is known (its answer class only where
        answers repeat: a class of one answer says nothing of its paraphrases)."""
        klass = self.answer_class if self.repeating else None
        return Label(self.similarity, agreed, klass, source, confidence=self.confidence)

    def sure(self) -> bool:
        """Whether the student's confidence reaches :attr:`min_confidence` (True where none is asked)."""
        if self.min_confidence is None:
            return True
        return self.confidence is not None and self.confidence >= self.min_confidence

    def consistent(self, answer: Mapping[str, Any] | None) -> bool:
        """Whether the student's ``answer`` (an assistant message) passes the cross-check."""
        if self.expected is None:
            return True
        return answer is not None and answer_class(answer_key({"response": answer})) in self.expected
