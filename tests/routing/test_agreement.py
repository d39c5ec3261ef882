"""Comparing answers by their shape: JSON field by field with normalised values, declared exact fields."""

from __future__ import annotations

import json

from distillkit.routing.agreement import compare, exact_for, fields, normalise

JSON = {"response_format": {"type": "json_object"}}


def msg(value: object) -> dict[str, object]:
    return {"role": "assistant", "content": value if isinstance(value, str) else json.dumps(value)}


def test_json_answers_agree_field_by_field_after_normalisation() -> None:
    teacher = {"name": "Ana  Lima", "amount": 1200.0, "currency": "EUR", "date": "2026-03-04", "order_id": None}
    student = {"order_id": None, "date": "4 March 2026", "currency": "EUR", "amount": "1,200.00", "name": "Ana Lima"}
    result = compare(JSON, msg(student), msg(teacher))
    assert result.agreed and result.fields == dict.fromkeys(teacher, True) and result.field_share == 1.0


def test_a_wrong_field_is_named_and_the_answer_disagrees() -> None:
    teacher = {"name": "Ana", "amount": 45.2, "currency": "EUR", "intent": "refund"}
    student = {"name": "Ana", "amount": 45.2, "currency": "USD", "intent": "refund", "extra": 1}
    result = compare(JSON, msg(student), msg(teacher))
    assert not result.agreed and result.score == 0.0
    assert result.fields == {"name": True, "amount": True, "currency": False, "intent": True, "extra": False}
    assert result.field_share == 3 / 5


def test_missing_and_null_fields_differ_and_nested_paths_are_named() -> None:
    result = compare(JSON, msg({"a": {"b": [1, 2]}}), msg({"a": {"b": [1, 3]}, "c": None}))
    assert result.fields == {"a.b[0]": True, "a.b[1]": False, "c": False}


def test_declared_exact_fields_are_compared_as_they_are() -> None:
    teacher, student = msg({"order_id": "00123", "amount": 5}), msg({"order_id": "123", "amount": "5.00"})
    assert compare(JSON, student, teacher).agreed  # both normalise to numbers
    strict = compare(JSON, student, teacher, exact_fields={"order_id"})
    assert strict.fields == {"order_id": False, "amount": True}
    assert exact_for(["order_id", "extract:amount", "other:name"], "extract") == {"order_id", "amount"}


def test_normalisation_of_values() -> None:
    assert normalise(" 1,200.50 ") == 1200.5 == normalise(1200.5)
    assert normalise("March 4, 2026") == normalise("4th March 2026") == normalise("2026-3-4") == "2026-03-04"
    assert normalise("03/04/2026") == "03/04/2026"  # day and month order unknown: left as it is
    assert normalise("Hello   world") == "Hello world" and normalise(True) is True
    assert fields({}) == {"": {}} and fields({"a": []}) == {"a": []}


def test_tool_calls_compare_by_name_and_arguments_field_by_field() -> None:
    def call(name: str, args: dict[str, object], call_id: str) -> dict[str, object]:
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}

    same = compare({}, {"tool_calls": [call("f", {"x": "7"}, "a")]}, {"tool_calls": [call("f", {"x": 7}, "b")]})
    assert same.agreed and same.fields == {"[0].name": True, "[0].arguments.x": True}
    other = compare({}, {"tool_calls": [call("g", {"x": 7}, "a")]}, {"tool_calls": [call("f", {"x": 7}, "b")]})
    assert not other.agreed and other.fields == {"[0].name": False, "[0].arguments.x": True}


def test_text_answers_keep_their_rules() -> None:
    assert compare({}, msg("card_arrival "), msg("card_arrival")).agreed
    assert not compare({}, msg("card_arrived"), msg("card_arrival")).agreed
    invalid = compare(JSON, msg("not json"), msg({"a": 1}))
    assert not invalid.agreed and invalid.fields == {}
