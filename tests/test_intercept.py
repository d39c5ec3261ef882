"""wrap / unwrap: the wrapped client behaves exactly like the raw one, and every call is seen once."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from _support import Captures, ask
from openai.resources.chat.completions import AsyncCompletions, Completions
from openai.types.chat import ChatCompletion

import distillkit
from distillkit import ConfigError, Distiller
from distillkit._context import internal_call
from distillkit.testing import Reply, Simulator

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


def test_wrap_returns_the_same_client_and_the_same_content(simulator: Simulator, distiller: Distiller) -> None:
    raw = simulator.client()
    expected = ask(raw, "Where is my card?")
    client = distillkit.wrap(simulator.client(), distiller)
    assert distillkit.is_wrapped(client)

    got = ask(client, "Where is my card?")

    assert type(got) is ChatCompletion
    assert got.choices[0].message.content == expected.choices[0].message.content
    assert got.usage == expected.usage
    assert distillkit.route_info(got) is not None
    assert distillkit.route_info(expected) is None


def test_teacher_answer_reaches_the_capture_hook_once(client: Any, captures: Captures, distiller: Distiller) -> None:
    decisions: list[Any] = []
    distiller.on("decision", decisions.append)
    messages = [{"role": "system", "content": "You are a bank."}, {"role": "user", "content": "Card lost"}]

    response = client.chat.completions.create(model="gpt-4.1", messages=messages, temperature=0.2)
    messages.append({"role": "assistant", "content": "appended by the caller afterwards"})

    [captured] = captures.flushed()
    assert captured.query == "Card lost"
    assert captured.messages == messages[:2]  # a snapshot taken before the caller changed its list
    assert captured.response["content"] == response.choices[0].message.content
    assert captured.params == {"model": "gpt-4.1", "temperature": 0.2}
    assert captured.teacher_model == "gpt-4.1"
    assert [d.reason for d in decisions] == ["no distilled model"]
    assert distiller.stats()["default"].teacher == 1


def test_tool_calls_and_json_mode_are_captured_as_answered(client: Any, captures: Captures) -> None:
    tool_response = client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "balance of 42?"}], tools=TOOLS
    )
    json_response = ask(client, "give json", response_format={"type": "json_object"})

    assert tool_response.choices[0].message.tool_calls[0].function.name == "get_balance"
    assert json.loads(json_response.choices[0].message.content)
    tool_capture, json_capture = captures.flushed()
    assert tool_capture.response["tool_calls"][0]["function"]["name"] == "get_balance"
    assert tool_capture.params["tools"] == TOOLS
    assert json.loads(json_capture.response["content"]) == json.loads(json_response.choices[0].message.content)


def test_incomplete_answers_are_not_captured(simulator: Simulator, client: Any, captures: Captures) -> None:
    simulator.answer = lambda request: Reply(content="cut sho", finish_reason="length")
    response = ask(client, "long question")
    assert response.choices[0].finish_reason == "length"
    assert captures.flushed() == []


def test_raw_response_keeps_its_type_and_is_captured(client: Any, captures: Captures) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "raw please"}]
    )
    assert type(raw).__name__ == "LegacyAPIResponse"
    assert raw.headers.get("x-request-id")
    completion = raw.parse()
    assert type(completion) is ChatCompletion
    assert distillkit.route_info(raw) is distillkit.route_info(completion)
    [captured] = captures.flushed()
    assert captured.response["content"] == completion.choices[0].message.content


def test_streaming_response_passes_through_not_captured(client: Any, captures: Captures) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "streamed raw"}]
    ) as response:
        assert json.loads(response.read())["choices"][0]["message"]["content"] == "Answer: streamed raw"
    assert captures.flushed() == []


@pytest.mark.parametrize(("status", "error"), [(429, openai.RateLimitError), (500, openai.InternalServerError)])
def test_openai_errors_reach_the_caller_unchanged(
    simulator: Simulator, distiller: Distiller, captures: Captures, status: int, error: type[Exception]
) -> None:
    raw = simulator.client()
    client = distillkit.wrap(simulator.client(), distiller)
    simulator.inject("chat", status=status, times=2)

    with pytest.raises(error) as unwrapped_error:
        ask(raw, "hello")
    with pytest.raises(error) as wrapped_error:
        ask(client, "hello")

    assert type(wrapped_error.value) is type(unwrapped_error.value)
    assert wrapped_error.value.status_code == status
    assert wrapped_error.value.body == unwrapped_error.value.body
    assert captures.flushed() == []


def test_sdk_retries_still_work(simulator: Simulator, distiller: Distiller, captures: Captures) -> None:
    client = distillkit.wrap(simulator.client(max_retries=2), distiller)
    simulator.inject("chat", status=429, times=2)

    response = ask(client, "retry me")

    assert response.choices[0].message.content == "Answer: retry me"
    assert [r.status for r in simulator.requests if r.path.endswith("/chat/completions")] == [429, 429, 200]
    assert len(captures.flushed()) == 1


def test_with_options_copies_stay_wrapped(client: Any, captures: Captures) -> None:
    copy = client.with_options(timeout=5.0)
    assert copy is not client
    assert distillkit.is_wrapped(copy)
    ask(copy, "from a copy")
    ask(client.copy(max_retries=1), "from another copy")
    assert [c.query for c in captures.flushed()] == ["from a copy", "from another copy"]


def test_double_wrap_is_a_noop(simulator: Simulator, distiller: Distiller, captures: Captures) -> None:
    client = distillkit.wrap(simulator.client(), distiller)
    original = Completions.__dict__["create"].__wrapped__
    assert distillkit.wrap(client, distiller) is client
    assert Completions.__dict__["create"].__wrapped__ is original  # not a wrapper of a wrapper
    ask(client, "once")
    assert len(captures.flushed()) == 1
    assert distiller.stats()["default"].requests == 1


def test_unwrap_really_restores(simulator: Simulator, distiller: Distiller, captures: Captures) -> None:
    originals = (Completions.__dict__["create"], AsyncCompletions.__dict__["create"], openai.OpenAI.copy)
    client = distillkit.wrap(simulator.client(), distiller)
    assert Completions.__dict__["create"] is not originals[0]

    assert distillkit.unwrap(client) is client
    distillkit.unwrap(client)  # twice is fine

    assert not distillkit.is_wrapped(client)
    assert (Completions.__dict__["create"], AsyncCompletions.__dict__["create"], openai.OpenAI.copy) == originals
    assert "with_options" not in openai.OpenAI.__dict__ or openai.OpenAI.with_options is openai.OpenAI.copy
    ask(client, "not seen")
    assert captures.flushed() == []


def test_patch_stays_while_another_client_is_wrapped(simulator: Simulator, distiller: Distiller) -> None:
    first = distillkit.wrap(simulator.client(), distiller)
    second = distillkit.wrap(simulator.client(), distiller)
    distillkit.unwrap(first)
    captures = Captures(distiller)
    ask(second, "still wrapped")
    ask(first, "not wrapped any more")
    assert [c.query for c in captures.flushed()] == ["still wrapped"]


def test_per_call_keyword_is_removed_before_the_request_leaves(
    simulator: Simulator, client: Any, captures: Captures
) -> None:
    response = ask(client, "no routing", distillkit={"route": False, "namespace": "billing"})
    ask(client, "no capture", distillkit={"capture": False})

    assert all("distillkit" not in body for body in simulator.chat_requests())
    assert distillkit.route_info(response).reason == "routing off"
    assert [(c.query, c.namespace) for c in captures.flushed()] == [("no routing", "billing")]


def test_per_call_keyword_rejects_unknown_options(client: Any) -> None:
    with pytest.raises(ConfigError, match="roote"):
        ask(client, "typo", distillkit={"roote": False})


def test_wrap_rejects_what_is_not_an_openai_client() -> None:
    with pytest.raises(ConfigError, match="OpenAI"):
        distillkit.wrap(object())


def test_distillkits_own_calls_are_never_intercepted(client: Any, captures: Captures) -> None:
    with internal_call():
        ask(client, "internal")
    assert captures.flushed() == []


def test_wrap_uses_the_default_distiller_built_from_the_environment(
    simulator: Simulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("DISTILLKIT_NAMESPACE", "from-env")
    monkeypatch.setenv("DISTILLKIT_PATH", str(tmp_path / "env-store"))
    client = distillkit.wrap(simulator.client())
    default = distillkit.default_distiller()
    assert default is distillkit.default_distiller()
    ask(client, "default")
    assert default.flush(10)
    assert default.stats()["from-env"].captured == 1
    assert default.config.path == str(tmp_path / "env-store")


async def test_async_client(simulator: Simulator, distiller: Distiller, captures: Captures) -> None:
    client = distillkit.wrap(simulator.async_client(), distiller)
    response = await client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "async"}])
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "async raw"}]
    )
    assert type(response) is ChatCompletion
    assert response.choices[0].message.content == "Answer: async"
    assert raw.parse().choices[0].message.content == "Answer: async raw"
    simulator.inject("chat", status=500)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "x"}])
    assert [c.query for c in captures.flushed()] == ["async", "async raw"]
    await client.close()
