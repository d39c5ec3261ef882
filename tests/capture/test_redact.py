"""The redact hook: personal data is masked in what is stored, never in what the caller gets."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.capture.redact import luhn_valid, pii
from distillkit.testing import Simulator

EMAIL, CARD, PHONE = "jane.doe@example.com", "4111 1111 1111 1111", "+44 20 7946 0958"
PERSONAL = f"I am {EMAIL}, card {CARD}, call me on {PHONE}. Where is my parcel?"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_balance",
            "description": "Balance of an account",
            "parameters": {"type": "object", "properties": {"account": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def redacting(simulator: Simulator, config: DistillConfig) -> Iterator[tuple[Any, Distiller]]:
    distiller = Distiller(config, redact=pii)
    client = distillkit.wrap(simulator.client(), distiller)
    yield client, distiller
    distiller.close()


def stored(distiller: Distiller) -> dict[str, dict[str, Any]]:
    assert distiller.flush(10)
    return {p.payload["query"]: p.payload for p in distiller.store.scroll(namespace="default")}


def test_pii_masks_emails_cards_and_phones_only() -> None:
    assert pii(PERSONAL) == "I am [EMAIL], card [CARD], call me on [PHONE]. Where is my parcel?"
    assert pii("card 4242-4242-4242-4242 and 5555555555554444") == "card [CARD] and [CARD]"
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    # Not personal data: a number failing the Luhn check, dates, amounts, short ids.
    kept = "ref 4111 1111 1111 1112, on 2026-11-25 pay 1234.56 for order 12345 at 10:30"
    assert pii(kept) == kept


def test_stored_fields_are_redacted_and_marked(redacting: tuple[Any, Distiller]) -> None:
    client, distiller = redacting
    messages = [{"role": "system", "content": "You are a bank."}, {"role": "user", "content": PERSONAL}]

    response = client.chat.completions.create(model="gpt-4.1", messages=messages)

    assert response.choices[0].message.content == f"Answer: {PERSONAL}"  # the caller sees it all
    [payload] = stored(distiller).values()
    text = json.dumps(payload)
    for secret in (EMAIL, CARD, PHONE):
        assert secret not in text
    assert payload["query"] == pii(PERSONAL)
    assert payload["messages"] == [messages[0], {"role": "user", "content": pii(PERSONAL)}]
    assert payload["response"]["content"] == f"Answer: {pii(PERSONAL)}"
    assert payload["redacted"] == ["query", "messages", "response"]
    # The stored vector is of the masked query, not of the caller's words.
    [hit] = distiller.store.search(distiller.embedder.embed([pii(PERSONAL)])[0], namespace="default")
    assert hit.score > 0.999


def test_export_marks_redacted_examples(redacting: tuple[Any, Distiller]) -> None:
    client, distiller = redacting
    client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": PERSONAL}])
    client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "Nothing personal"}])
    assert distiller.flush(10)
    examples = {e["messages"][0]["content"]: e for e in distiller.trainer.export("default")}
    assert examples[pii(PERSONAL)]["redacted"] == ["query", "messages", "response"]
    assert "redacted" not in examples["Nothing personal"]


def test_text_parts_and_tool_arguments_are_redacted(redacting: tuple[Any, Distiller]) -> None:
    client, distiller = redacting
    client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": [{"type": "text", "text": f"balance for {EMAIL}?"}]}],
        tools=TOOLS,
    )
    client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "Nothing personal here"}])

    points = stored(distiller)
    assert EMAIL not in json.dumps(points)
    assert points["balance for [EMAIL]?"]["messages"][0]["content"][0]["text"] == "balance for [EMAIL]?"
    assert points["Nothing personal here"]["redacted"] == []


def test_a_failing_redactor_drops_the_capture(
    simulator: Simulator, config: DistillConfig, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(text: str) -> str:
        raise ValueError(f"cannot redact {text}")

    distiller = Distiller(config, redact=broken)
    client: Any = distillkit.wrap(simulator.client(), distiller)
    try:
        with caplog.at_level(logging.WARNING, logger="distillkit"):
            response = client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": PERSONAL}])
            assert response.choices[0].message.content == f"Answer: {PERSONAL}"
            assert distiller.flush(10)
        assert distiller.store.count(namespace="default") == 0
        assert distiller.stats()["default"].dropped == 1
        assert "redact hook failed" in caplog.text and EMAIL not in caplog.text
    finally:
        distiller.close()
