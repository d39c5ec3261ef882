"""Tests of the seeded extraction traffic: what it writes, what the teacher answers, how it splits.

Each written value is derived again here from the answer and the form the record declares, so a
generator that writes one thing and answers another fails.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import openai
import pytest

from distillkit.testing import Simulator, extraction
from distillkit.testing.extraction import (
    AMOUNT_FORMS,
    CURRENCIES,
    CURRENCY_FORMS,
    DATE_FORMS,
    FIELDS,
    INTENTS,
    NAME_FORMS,
    OFF_TASK_ANSWER,
    ORDER_FORMS,
    SYSTEM,
    THIS_YEAR,
    Extraction,
    fields_matching,
    messages,
    same_json,
    split_of,
    teacher,
)

TRAIN = messages(0, 400)
ON_TASK = [r for r in TRAIN if not r.off_task]
ORDER_PATTERNS = {
    "dash": r"[A-Z]{2}-\d{5}",
    "hash": r"\d{6}",
    "prefixed": r"ORD20\d\d-\d{4}",
    "digits": r"\d{8}",
}


def test_the_same_seed_gives_the_same_records_and_another_seed_others() -> None:
    assert messages(0, 400) == TRAIN
    assert messages(0, 50, split="test") == messages(0, 50, split="test")
    other = messages(1, 400)
    assert len({r.text for r in other} & {r.text for r in TRAIN}) < 40


def test_every_form_intent_currency_and_many_templates_appear() -> None:
    forms = {"name": NAME_FORMS, "amount": AMOUNT_FORMS, "currency": CURRENCY_FORMS}
    forms |= {"date": DATE_FORMS, "order_id": ORDER_FORMS}
    for name, expected in forms.items():
        assert {r.forms[name] for r in ON_TASK} == set(expected), name
    assert {r.answer["intent"] for r in ON_TASK} == set(INTENTS)
    assert {r.answer["currency"] for r in ON_TASK} == {*CURRENCIES, None}
    assert len({r.template for r in ON_TASK}) >= 20
    assert len({r.template for r in TRAIN if r.off_task}) >= 8


def test_on_task_answers_are_json_objects_with_the_fields_in_order() -> None:
    for record in ON_TASK:
        assert list(json.loads(record.content)) == list(FIELDS)
        assert json.loads(record.content) == record.answer
        assert record.answer["intent"] in INTENTS
    assert all(json.loads(r.content) == OFF_TASK_ANSWER for r in TRAIN if r.off_task)


def test_absent_fields_are_null_and_present_ones_are_not() -> None:
    for record in ON_TASK:
        for name, form in record.forms.items():
            assert (record.answer[name] is None) == (form == "absent"), (record.text, name)
        if record.answer["amount"] is None:
            assert record.answer["currency"] is None
        if all(record.answer[name] is None for name in ("amount", "date", "order_id")):
            assert not re.search(r"\d", record.text), record.text


def test_dates_are_iso_in_the_answer_whatever_form_the_text_uses() -> None:
    for record in ON_TASK:
        form = record.forms["date"]
        if form == "absent":
            assert not re.search(r"\d{4}-\d\d-\d\d|\d\d/\d\d/\d{4}", record.text)
            continue
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", record.answer["date"])
        day = datetime.date.fromisoformat(record.answer["date"])
        month = extraction.MONTHS[day.month - 1]
        written = {
            "iso": record.answer["date"],
            "day_month_year": f"{day.day} {month} {day.year}",
            "month_day_year": f"{month} {day.day}, {day.year}",
            "month_day": f"{month} {day.day}",
            "slash": f"{day.month:02d}/{day.day:02d}/{day.year}",
            "abbreviated": f"{day.day} {month[:3]} {day.year}",
        }[form]
        assert written in record.text, (record.text, record.answer["date"])
        if form == "month_day":  # no year written: this year
            assert day.year == THIS_YEAR
            assert not re.search(rf"{month} {day.day}(,)? \d{{4}}", record.text)


def test_amounts_are_numbers_and_currencies_iso_codes_whatever_the_text_writes() -> None:
    for record in ON_TASK:
        amount, code = record.answer["amount"], record.answer["currency"]
        form, style = record.forms["amount"], record.forms["currency"]
        if form == "absent":
            continue
        assert isinstance(amount, (int, float)) and not isinstance(amount, bool)
        # Yen have no cents; without a currency the text may be yen too.
        forms = {
            "decimal": [f"{amount:.2f}"],
            "thousands": [f"{amount:,}"] if code == "JPY" else [f"{amount:,.2f}"],
            "integer": [str(amount)],
        }[form]
        if form == "thousands" and code is None and isinstance(amount, int):
            forms.append(f"{amount:,}")
        if form == "integer":
            assert isinstance(amount, int)
        if form == "thousands":
            assert amount >= 1000
        found = [w for w in forms if re.search(rf"(?<![\d.])(?<!\d,){re.escape(w)}(?!\d|[,.]\d)", record.text)]
        assert found, (record.text, amount)
        written = found[0]
        others = [c for c in CURRENCIES if c != code]
        if style == "absent":
            assert code is None
            assert not any(c in record.text or CURRENCIES[c][1] in record.text for c in CURRENCIES)
            continue
        assert code in CURRENCIES
        symbol, word = CURRENCIES[code]
        shown = {
            "code": (f"{code} {written}", f"{written} {code}"),
            "symbol": (f"{symbol}{written}",),
            "word": (f"{written} {word}",),
        }[style]
        assert any(s in record.text for s in shown), (record.text, code)
        assert not any(c in record.text for c in others)


def test_order_ids_are_kept_without_a_leading_hash() -> None:
    for record in ON_TASK:
        form, order = record.forms["order_id"], record.answer["order_id"]
        if form == "absent":
            assert not re.search(r"#|ORD|[A-Z]{2}-\d{5}|\d{8}", record.text), record.text
            continue
        assert re.fullmatch(ORDER_PATTERNS[form], order), (form, order)
        assert ("#" + order if form == "hash" else order) in record.text


def test_names_are_written_before_or_after_the_request() -> None:
    for record in ON_TASK:
        name, form = record.answer["name"], record.forms["name"]
        if form == "absent":
            continue
        assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", name)
        assert record.text.endswith(name) == (form == "signature"), record.text
        assert name in record.text


@pytest.mark.parametrize(("n", "share"), [(10, 0.1), (15, 0.1), (200, 0.1), (401, 0.1), (60, 0.0), (60, 0.5)])
def test_the_off_task_share_is_the_one_asked(n: int, share: float) -> None:
    records = messages(3, n, off_task=share)
    off = [r for r in records if r.off_task]
    assert len(records) == n
    assert len(off) == round(n * share)
    for record in off:
        assert record.answer == OFF_TASK_ANSWER
        assert record.forms == {}
        assert not re.search(r"\d|refund|order|charge", record.text, re.IGNORECASE), record.text


def test_train_and_test_never_share_a_text_whatever_the_seeds() -> None:
    trains = [messages(seed, 300) for seed in (0, 1, 2)]
    tests = [messages(seed, 150, split="test") for seed in (0, 1, 2)]
    train_texts = {r.text for records in trains for r in records}
    test_texts = {r.text for records in tests for r in records}
    assert not train_texts & test_texts
    for records, split in [*((t, "train") for t in trains), *((t, "test") for t in tests)]:
        assert len({r.text for r in records}) == len(records)  # no text twice in one set
        assert {split_of(r.text) for r in records} == {split}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="split"):
        messages(0, 10, split="dev")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="off_task"):
        messages(0, 10, off_task=1.5)


def test_the_system_prompt_names_every_field_and_the_off_task_answer() -> None:
    assert all(name in SYSTEM for name in FIELDS)
    assert json.dumps(OFF_TASK_ANSWER) in SYSTEM
    assert len(SYSTEM.split()) <= 40  # the student's context is small


def test_fields_matching_counts_equal_values() -> None:
    record = next(r for r in ON_TASK if None not in r.answer.values())
    assert fields_matching(record.content, record.answer) == len(FIELDS)
    wrong = {**record.answer, "currency": "XXX", "date": None}
    assert fields_matching(json.dumps(wrong), record.answer) == len(FIELDS) - 2
    as_float = {**record.answer, "amount": float(record.answer["amount"])}
    assert fields_matching(json.dumps(as_float), record.answer) == len(FIELDS)  # 7 and 7.0: one JSON number
    assert fields_matching(json.dumps({"amount": True}), {"amount": 1}) == 0
    assert fields_matching("not json", record.answer) == 0
    assert fields_matching(json.dumps([record.answer]), record.answer) == 0
    assert fields_matching(None, record.answer) == 0


def test_same_json_needs_every_key_and_value() -> None:
    record = ON_TASK[0]
    assert same_json(record.content, record.answer)
    assert same_json(json.dumps(dict(reversed(list(record.answer.items())))), record.answer)  # order is no matter
    assert not same_json(json.dumps({**record.answer, "extra": 1}), record.answer)
    assert not same_json(json.dumps({k: v for k, v in record.answer.items() if k != "name"}), record.answer)
    assert not same_json(json.dumps({**record.answer, "intent": "other"}), record.answer)
    assert not same_json(record.content[:-1], record.answer)
    assert same_json(json.dumps(OFF_TASK_ANSWER), OFF_TASK_ANSWER)


def test_the_teacher_answers_each_record_over_http() -> None:
    records: list[Extraction] = TRAIN[:20]
    with Simulator(answer=teacher(records)) as sim:
        client = sim.client(max_retries=0)
        for record in records:
            request: dict[str, Any] = {"messages": record.chat, "response_format": {"type": "json_object"}}
            reply = client.chat.completions.create(model="gpt-4.1", **request)
            assert json.loads(reply.choices[0].message.content or "") == record.answer
        with pytest.raises(openai.InternalServerError, match="no extraction record"):
            client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]
            )
