"""Bad input: the caller gets exactly what an unwrapped client gets (the API's own error, or the
answer, passed through unrouted), and nothing corrupt is stored."""

from __future__ import annotations

import math
from typing import Any

import pytest
from _support import train_by_hand

from distillkit import Distiller
from distillkit.testing import Simulator

STUDENT = "ft:gpt-4.1-nano-2025-04-14:distillkit::badinput"
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_balance", "arguments": "{}"}}
EMOJI = "Ça va? 你好 🙂👍🏽 ﬁ \u200b e\u0301 \U0001f3f3\ufe0f\u200d\U0001f308"

CASES: dict[str, list[Any] | str] = {
    "messages is a string": "hello",
    "message is not an object": [42],
    "message without role": [{"content": "hi"}],
    "no messages": [],
    "message without content": [{"role": "user"}],
    "unknown content part": [{"role": "user", "content": [{"type": "bogus", "x": 1}]}],
    "image content part": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is on this picture"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        }
    ],
    "no user message": [{"role": "system", "content": "You are terse."}],
    "unicode and emoji": [{"role": "user", "content": EMOJI}],
    "None content with tool calls": [
        {"role": "user", "content": "balance of my account?"},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ],
    "a 1 MB message": [{"role": "user", "content": "lorem ipsum " * 87_382}],
}


def outcome(client: Any, messages: Any) -> tuple[str, Any]:
    try:
        response = client.chat.completions.create(model="gpt-4.1", messages=messages)
    except Exception as exc:
        return type(exc).__name__, getattr(exc, "body", str(exc))
    return "answer", response.choices[0].message.content


def assert_nothing_corrupt(distiller: Distiller) -> list[dict[str, Any]]:
    assert distiller.flush(30)
    points = list(distiller.store.scroll(namespace="default"))
    for point in points:
        payload = point.payload
        assert isinstance(payload["query"], str) and payload["query"].strip()
        assert isinstance(payload["messages"], list) and all(isinstance(m, dict) for m in payload["messages"])
        assert payload["response"]["role"] == "assistant" and isinstance(payload["response"]["content"], str)
    for hit in distiller.store.search([1.0] * distiller.embedder.dim, namespace="default", limit=len(points) or 1):
        assert math.isfinite(hit.score)
    return [p.payload for p in points]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_behaves_like_an_unwrapped_client(
    simulator: Simulator, distiller: Distiller, client: Any, name: str
) -> None:
    ask_once = "hello there, where is my card"
    client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": ask_once}])
    train_by_hand(distiller, "default", STUDENT, simulator)  # routing is live: bad input must not reach it

    expected = outcome(simulator.client(), CASES[name])
    got = outcome(client, CASES[name])

    assert got == expected
    if got[0] == "answer":
        assert simulator.chat_requests()[-1]["model"] == "gpt-4.1"  # passed through, unrouted
    assert_nothing_corrupt(distiller)


def test_what_is_stored_is_what_was_sent(client: Any, distiller: Distiller) -> None:
    for name in ("unicode and emoji", "None content with tool calls", "a 1 MB message", "no user message"):
        client.chat.completions.create(model="gpt-4.1", messages=CASES[name])

    stored = {p["query"]: p for p in assert_nothing_corrupt(distiller)}

    # The key covers the whole conversation: the last user message first, then the newer turns.
    balance = "balance of my account?\n\ntool: 42\n\nassistant: get_balance({})"
    assert set(stored) == {EMOJI, balance, CASES["a 1 MB message"][0]["content"]}  # type: ignore[index]
    assert stored[EMOJI]["messages"] == CASES["unicode and emoji"]
    assert stored[EMOJI]["response"]["content"] == f"Answer: {EMOJI}"
    assert stored[balance]["messages"] == CASES["None content with tool calls"]
    assert distiller.stats()["default"].skipped == 1  # no user message: nothing to route on, not stored
