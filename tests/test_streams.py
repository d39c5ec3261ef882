"""Streams: the caller gets the SDK's stream (proxied); the answer is captured once, only if read to the end."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from _support import Captures

import distillkit
from distillkit import Distiller
from distillkit.testing import Simulator

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


def stream(client: Any, text: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": text}], stream=True, **kwargs
    )


def test_stream_is_a_stream_with_the_same_chunks(simulator: Simulator, client: Any, captures: Captures) -> None:
    expected = [c.model_dump(exclude={"id", "created"}) for c in stream(simulator.client(), "tell me more")]

    response = stream(client, "tell me more")

    assert isinstance(response, openai.Stream)
    assert response.response.status_code == 200  # attributes of the real stream are reachable
    assert [c.model_dump(exclude={"id", "created"}) for c in response] == expected
    [captured] = captures.flushed()
    assert captured.response == {"role": "assistant", "content": "Answer: tell me more"}
    assert distillkit.route_info(response).routed is False


def test_usage_of_a_stream_is_counted(client: Any, captures: Captures, distiller: Distiller) -> None:
    chunks = list(stream(client, "count my tokens", stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None
    [captured] = captures.flushed()
    assert captured.usage["completion_tokens"] == chunks[-1].usage.completion_tokens
    assert distiller.stats()["default"].tokens["gpt-4.1"]["completion"] == chunks[-1].usage.completion_tokens


def test_streamed_tool_calls_are_assembled(client: Any, captures: Captures) -> None:
    list(stream(client, "look it up", tools=TOOLS))
    [captured] = captures.flushed()
    [call] = captured.response["tool_calls"]
    assert call["function"]["name"] == "lookup"
    assert call["function"]["arguments"] == "{}"
    assert call["id"]


def test_early_break_is_not_captured(client: Any, captures: Captures) -> None:
    for _chunk in stream(client, "one two three four five"):
        break
    assert captures.flushed() == []


def test_with_block_and_close(client: Any, captures: Captures) -> None:
    with stream(client, "inside with") as response:
        assert isinstance(response, openai.Stream)
        next(response)
    assert response.response.is_closed

    closed = stream(client, "closed early")
    next(closed)
    closed.close()
    closed.close()  # idempotent

    with stream(client, "read fully in with") as response:
        text = "".join(c.choices[0].delta.content or "" for c in response if c.choices)
    assert text == "Answer: read fully in with"
    assert [c.query for c in captures.flushed()] == ["read fully in with"]


def test_next_until_exhausted_is_captured_once(client: Any, captures: Captures) -> None:
    response = stream(client, "by next")
    chunks = []
    while True:
        try:
            chunks.append(next(response))
        except StopIteration:
            break
    response.close()  # closing after exhaustion must not finish twice
    assert len(captures.flushed()) == 1


@pytest.mark.parametrize("mode", ["error", "drop"])
def test_failure_mid_stream_reaches_the_caller_and_is_not_captured(
    simulator: Simulator, client: Any, captures: Captures, mode: str
) -> None:
    simulator.inject("chat", mid_stream=mode)
    with pytest.raises(openai.APIError):
        list(stream(client, "fails halfway"))
    assert captures.flushed() == []


async def test_async_stream(simulator: Simulator, distiller: Distiller, captures: Captures) -> None:
    client = distillkit.wrap(simulator.async_client(), distiller)
    response = await client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "async stream"}], stream=True
    )
    assert isinstance(response, openai.AsyncStream)
    text = "".join([c.choices[0].delta.content or "" async for c in response if c.choices])
    assert text == "Answer: async stream"

    async with await client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "abandoned"}], stream=True
    ) as abandoned:
        await abandoned.__anext__()

    assert [c.query for c in captures.flushed()] == ["async stream"]
    await client.close()
