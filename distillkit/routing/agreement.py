"""Whether two answers to one request say the same: the one place answers are compared.

The promotion gate, shadow checks, exploration and the cross-check all compare through here, so a
label means the same thing wherever it was measured. Answers are compared by their shape:

* **tool calls**: by name and parsed arguments, field by field like JSON (their ids differ on
  every call);
* **JSON** (``response_format`` ``json_object`` / ``json_schema``, and tool arguments): parsed and
  compared **field by field** (:func:`fields`), each value normalised first: whitespace collapsed,
  numbers compared as numbers (``"45.2"``, ``45.20``, ``"1,200.00"``), dates in their common written
  forms compared as ISO dates. Fields declared exact (``DISTILLKIT_EXACT_FIELDS``) are compared
  as they are. The answers agree when every field does; :attr:`Comparison.fields` says which did;
* **answers that repeat** in the namespace (a label, a canned reply) or short ones
  (``SHORT_ANSWER_WORDS`` words or fewer): equal once whitespace is collapsed;
* **other free text**: :class:`difflib.SequenceMatcher` ratio at least ``text_similarity``, or the
  teacher as judge (``DISTILLKIT_JUDGE=teacher``, see :mod:`distillkit.training.gate`).

:func:`answer_key` is an answer's canonical form (what "the same answer" means for answers that
repeat); :func:`answer_class` names it briefly.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SHORT_ANSWER_WORDS",
    "TEXT_SIMILARITY",
    "Comparison",
    "agreement",
    "agrees",
    "answer_class",
    "answer_key",
    "compare",
    "fields",
    "free_text",
    "is_json",
    "normalise",
]

#: Free-text answers agree when their SequenceMatcher ratio is at least this.
TEXT_SIMILARITY = 0.8
#: Answers of at most this many words are compared exactly (after whitespace is collapsed).
SHORT_ANSWER_WORDS = 10


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


def exact_for(declared: Collection[str], namespace: str) -> frozenset[str]:
    """The JSON field paths compared as they are in ``namespace``: ``DISTILLKIT_EXACT_FIELDS``
    entries ``path`` (every namespace) and ``namespace:path`` (that namespace only)."""
    out = set()
    for entry in declared:
        scope, sep, path = entry.rpartition(":")
        if not sep or scope == namespace:
            out.add(path)
    return frozenset(out)


def is_json(kwargs: Mapping[str, Any]) -> bool:
    """Whether the request asks for JSON content (``response_format`` ``json_object`` / ``json_schema``)."""
    response_format = kwargs.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    return kind in ("json_object", "json_schema")


@dataclass(frozen=True)
class Comparison:
    """How two answers compare.

    Attributes:
        agreed: the student's answer counts as the teacher's.
        score: how alike they are, 0 to 1: the text ratio for free text, else 1 or 0 (agreed or
            not; :attr:`field_share` is the share of equal fields).
        fields: for JSON and tool calls, each field path of the teacher's answer (and any the
            student added) → equal or not; None for text.
    """

    agreed: bool
    score: float
    fields: dict[str, bool] | None = None

    @property
    def field_share(self) -> float | None:
        """The share of equal fields (JSON and tool calls), None for text."""
        if self.fields is None:
            return None
        return sum(self.fields.values()) / len(self.fields) if self.fields else float(self.agreed)


# --- normalisation ------------------------------------------------------------------------------

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ]
    )
    for name in names
}
_ISO = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")
_DAY_MONTH_YEAR = re.compile(r"(\d{1,2})(?:st|nd|rd|th)?\s+([a-z]+)\.?,?\s+(\d{4})")
_MONTH_DAY_YEAR = re.compile(r"([a-z]+)\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})")


def _date(text: str) -> str | None:
    """The ISO form of a date written as ``2026-03-04``, ``4 March 2026`` or ``March 4, 2026``.

    Numeric day/month orders other than ISO's (``03/04/2026``) are ambiguous and left as they are.
    """
    lowered = text.strip().lower()
    found: tuple[int, int, int] | None = None
    if match := _ISO.fullmatch(lowered):
        found = (int(match[1]), int(match[2]), int(match[3]))
    elif (match := _DAY_MONTH_YEAR.fullmatch(lowered)) and match[2] in _MONTHS:
        found = (int(match[3]), _MONTHS[match[2]], int(match[1]))
    elif (match := _MONTH_DAY_YEAR.fullmatch(lowered)) and match[1] in _MONTHS:
        found = (int(match[3]), _MONTHS[match[1]], int(match[2]))
    if found is None:
        return None
    try:
        return _dt.date(*found).isoformat()
    except ValueError:
        return None


def normalise(value: Any) -> Any:
    """A JSON value in the form fields are compared in: numbers as floats, dates as ISO dates,
    strings with whitespace collapsed; anything else as it is."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = " ".join(value.split())
        if _NUMBER.fullmatch(text):
            return float(text.replace(",", ""))
        return _date(text) or text
    return value


def fields(value: Any, prefix: str = "") -> dict[str, Any]:
    """A parsed JSON value as ``{path: leaf}``: ``{"a": {"b": [1]}}`` → ``{"a.b[0]": 1}``.

    An empty object or list is a leaf of its own (so ``{}`` and ``{"a": null}`` differ).
    """
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(fields(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(fields(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _same(path: str, a: Any, b: Any, exact: Collection[str]) -> bool:
    if path in exact:
        return bool(a == b) and type(a) is type(b)
    return bool(normalise(a) == normalise(b))


def _compare_json(student: Any, teacher: Any, exact: Collection[str]) -> Comparison:
    theirs, ours = fields(teacher), fields(student)
    result = {path: path in ours and _same(path, ours[path], value, exact) for path, value in theirs.items()}
    result.update({path: False for path in ours if path not in theirs})  # a field the teacher never gave
    agreed = all(result.values())
    return Comparison(agreed, float(agreed), result)


def _parsed(text: Any) -> tuple[bool, Any]:
    if not isinstance(text, str):
        return False, None
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def _calls(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for call in message.get("tool_calls") or []:
        function = (call.get("function") if isinstance(call, Mapping) else None) or {}
        arguments = function.get("arguments")
        ok, parsed = _parsed(arguments)
        out.append({"name": function.get("name"), "arguments": parsed if ok else arguments})
    return out


def _collapsed(text: Any) -> str:
    return " ".join(str(text or "").split())


def free_text(
    kwargs: Mapping[str, Any],
    student: Mapping[str, Any] | None,
    teacher: Mapping[str, Any] | None,
    *,
    repeating: bool = False,
) -> bool:
    """Whether :func:`compare` compares these answers by similarity (not structurally, not exactly):
    where a judge may decide instead."""
    student, teacher = student or {}, teacher or {}
    if student.get("tool_calls") or teacher.get("tool_calls") or is_json(kwargs) or repeating:
        return False
    return len(str(teacher.get("content") or "").split()) > SHORT_ANSWER_WORDS


def compare(
    kwargs: Mapping[str, Any],
    student: Mapping[str, Any] | None,
    teacher: Mapping[str, Any] | None,
    *,
    repeating: bool = False,
    text_similarity: float = TEXT_SIMILARITY,
    exact_fields: Collection[str] = (),
) -> Comparison:
    """Compare the student's answer with the teacher's (see the module docstring).

    Args:
        kwargs: the request (its ``response_format`` says whether the content is JSON).
        student: the student's assistant message.
        teacher: the teacher's assistant message.
        repeating: the teacher's answer is one the namespace sees again and again (compare exactly).
        text_similarity: the SequenceMatcher ratio free text must reach.
        exact_fields: JSON field paths compared without normalisation.

    Example:
        >>> json_request = {"response_format": {"type": "json_object"}}
        >>> c = compare(json_request, {"content": '{"amount": "45.20"}'}, {"content": '{"amount": 45.2}'})
        >>> c.agreed, c.fields
        (True, {'amount': True})
    """
    student, teacher = student or {}, teacher or {}
    if student.get("tool_calls") or teacher.get("tool_calls"):
        return _compare_json(_calls(student), _calls(teacher), exact_fields)
    a, b = student.get("content"), teacher.get("content")
    if is_json(kwargs):
        (ok_a, parsed_a), (ok_b, parsed_b) = _parsed(a), _parsed(b)
        if ok_a and ok_b:
            return _compare_json(parsed_a, parsed_b, exact_fields)
        same = _collapsed(a) == _collapsed(b)
        return Comparison(same, float(same), {} if ok_b else None)
    a, b = _collapsed(a), _collapsed(b)
    if a == b:
        return Comparison(True, 1.0)
    ratio = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    if free_text(kwargs, student, teacher, repeating=repeating):
        return Comparison(ratio >= text_similarity, ratio)
    return Comparison(False, ratio)


def agrees(
    kwargs: Mapping[str, Any], student: Mapping[str, Any] | None, teacher: Mapping[str, Any] | None, **how: Any
) -> bool:
    """Whether the student's answer counts as the teacher's: ``compare(...).agreed``."""
    return compare(kwargs, student, teacher, **how).agreed


def agreement(kwargs: Mapping[str, Any], student: Mapping[str, Any] | None, teacher: Mapping[str, Any] | None) -> float:
    """How alike two answers are, 0 to 1: ``compare(...).score``."""
    return compare(kwargs, student, teacher).score
