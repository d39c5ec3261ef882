"""Teacher timeouts and exhausted retries: a wrapped client fails exactly like a raw one.

429 and 500 without retries, and retries that succeed, are in tests/test_intercept.py.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from _support import Captures, ask

import distillkit
from distillkit import Distiller
from distillkit.testing import Simulator


def chat_statuses(simulator: Simulator) -> list[int | None]:
    return [r.status for r in simulator.requests if r.path.endswith("/chat/completions")]


def outcome(simulator: Simulator, client: Any) -> tuple[type[BaseException], Any, list[int | None]]:
    """The exception a call raises, its body, and the statuses of the attempts the SDK made."""
    simulator.reset_log()
    with pytest.raises(openai.APIError) as error:
        ask(client, "hello")
    return type(error.value), getattr(error.value, "body", None), chat_statuses(simulator)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_exhausted_look_the_same(
    simulator: Simulator, distiller: Distiller, captures: Captures, status: int
) -> None:
    raw = simulator.client(max_retries=2)
    wrapped = distillkit.wrap(simulator.client(max_retries=2), distiller)
    simulator.inject("chat", status=status, times=None)

    expected = outcome(simulator, raw)
    got = outcome(simulator, wrapped)

    assert got == expected
    assert expected[2] == [status] * 3  # the SDK's own retries ran, three attempts in all
    assert captures.flushed() == []


def test_timeouts_with_retries_look_the_same(simulator: Simulator, distiller: Distiller, captures: Captures) -> None:
    raw = simulator.client(max_retries=1, timeout=0.2)
    wrapped = distillkit.wrap(simulator.client(max_retries=1, timeout=0.2), distiller)
    simulator.inject("chat", latency=1.0, times=None)

    expected = outcome(simulator, raw)
    got = outcome(simulator, wrapped)

    assert expected[0] is openai.APITimeoutError and got[0] is expected[0]
    assert len(got[2]) == len(expected[2]) == 2  # first try and one retry, both timed out
    simulator.clear_faults()
    assert captures.flushed() == []


def test_a_timeout_then_a_successful_retry_is_captured_once(
    simulator: Simulator, distiller: Distiller, captures: Captures
) -> None:
    wrapped = distillkit.wrap(simulator.client(max_retries=1, timeout=0.3), distiller)
    simulator.inject("chat", latency=1.0, times=1)

    response = ask(wrapped, "slow at first")

    assert response.choices[0].message.content == "Answer: slow at first"
    assert len(captures.flushed()) == 1


async def test_async_timeouts_and_exhausted_retries_look_the_same(
    simulator: Simulator, distiller: Distiller, captures: Captures
) -> None:
    raw = simulator.async_client(max_retries=1, timeout=0.2)
    wrapped = distillkit.wrap(simulator.async_client(max_retries=1, timeout=0.2), distiller)
    errors: list[tuple[type[BaseException], Any]] = []
    for fault in ({"latency": 1.0}, {"status": 500}):
        simulator.clear_faults()
        simulator.inject("chat", times=None, **fault)  # type: ignore[arg-type]
        for client in (raw, wrapped):
            with pytest.raises(openai.APIError) as error:
                await client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "hi"}])
            errors.append((type(error.value), getattr(error.value, "body", None)))
    simulator.clear_faults()
    assert errors[0] == errors[1] and errors[0][0] is openai.APITimeoutError
    assert errors[2] == errors[3] and errors[2][0] is openai.InternalServerError
    assert captures.flushed() == []
    await raw.close()
    await wrapped.close()
