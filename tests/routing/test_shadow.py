"""Shadow checks: routed requests also asked of the teacher in the background; bad models demoted."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _support import KNOWN, ask, train_known

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.cli import main
from distillkit.errors import ConfigError
from distillkit.routing.agreement import agreement
from distillkit.testing import Simulator

STUDENT = "ft:gpt-4.1-nano-2025-04-14:distillkit::shadow01"


def wrong_student(request: dict[str, Any]) -> str:
    return "Sorry, I am not sure what you mean; please contact support."


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "shadow-store"
    monkeypatch.setenv("DISTILLKIT_PATH", str(path))
    return path


def make(path: Path, **shadow: Any) -> Distiller:
    # The error budget off: with it, the first disagreeing check already blocks that answer class
    # (tests/routing/test_budget_routing.py); here, the demotion that shadow checks do on their own.
    config = DistillConfig(path=str(path), max_error=None)
    return Distiller(config, **{"shadow_rate": 1.0, "shadow_min_samples": 5, **shadow})


def trained(sim: Simulator, distiller: Distiller) -> Any:
    client = distillkit.wrap(sim.client(), distiller)
    train_known(client, distiller, STUDENT, sim)
    return client


@pytest.fixture
def disagreeing() -> Iterator[Simulator]:
    with Simulator(student_answer=wrong_student) as sim:
        yield sim


def checked(client: Any, distiller: Distiller, text: str) -> Any:
    """Ask, then wait for the shadow check (at most a few run at once; the rest are skipped)."""
    response = ask(client, text)
    assert distiller.wait_shadows(10)
    return response


def teacher_calls(sim: Simulator) -> int:
    return sum(r["model"] == "gpt-4.1" for r in sim.chat_requests())


def test_a_disagreeing_model_is_demoted(disagreeing: Simulator, store_path: Path) -> None:
    distiller = make(store_path)
    try:
        client = trained(disagreeing, distiller)
        stored = distiller.store.count(namespace="default")
        before = teacher_calls(disagreeing)
        for _ in range(5):
            response = checked(client, distiller, KNOWN[0])
            assert distillkit.route_info(response).routed  # the caller got the student's answer
            assert response.choices[0].message.content == wrong_student({})
        assert distiller.flush(10)
        assert teacher_calls(disagreeing) == before + 5  # one shadow call per routed request
        assert distiller.store.count(namespace="default") == stored  # shadow answers are not captured
        assert distiller.registry.get("default") is None
        report = distiller.status()["default"]
        assert report["active_model"] is None
        assert report["demoted"]["model"] == STUDENT and "floor 0.8" in report["demoted"]["reason"]
        assert report["shadow"][STUDENT]["samples"] == 5
        assert report["shadow"][STUDENT]["mean_agreement"] < 0.8
        after = distillkit.route_info(ask(client, KNOWN[0]))
        assert not after.routed and after.reason == "no distilled model"
        distillkit.unwrap(client)
    finally:
        distiller.close()
    out = io.StringIO()
    assert main(["status"], out=out) == 0
    text = out.getvalue()
    assert f"shadow {STUDENT}: agreement" in text and "over 5 checks" in text
    assert f"demoted {STUDENT}: shadow agreement" in text


def test_an_agreeing_model_stays(simulator: Simulator, store_path: Path) -> None:
    distiller = make(store_path)
    try:
        client = trained(simulator, distiller)
        for _ in range(8):
            assert distillkit.route_info(checked(client, distiller, KNOWN[1])).routed
        assert distiller.wait_shadows(10)
        assert distiller.registry.get("default").model == STUDENT
        report = distiller.status()["default"]
        assert report["demoted"] is None
        assert report["shadow"] == {STUDENT: {"samples": 8, "mean_agreement": 1.0}}
        distillkit.unwrap(client)
    finally:
        distiller.close()


def test_too_few_samples_never_demote(disagreeing: Simulator, store_path: Path) -> None:
    distiller = make(store_path, shadow_min_samples=20)
    try:
        client = trained(disagreeing, distiller)
        for _ in range(5):
            checked(client, distiller, KNOWN[0])
        assert distiller.flush(10)
        assert distiller.registry.get("default").model == STUDENT
        assert distiller.status()["default"]["shadow"][STUDENT]["samples"] == 5
        distillkit.unwrap(client)
    finally:
        distiller.close()


def test_shadow_rate_zero_sends_nothing_extra(disagreeing: Simulator, store_path: Path) -> None:
    distiller = make(store_path, shadow_rate=0.0)
    try:
        client = trained(disagreeing, distiller)
        before = teacher_calls(disagreeing)
        for _ in range(5):
            ask(client, KNOWN[0])
        assert distiller.flush(10)
        assert teacher_calls(disagreeing) == before
        assert distiller.status()["default"]["shadow"] == {}
        distillkit.unwrap(client)
    finally:
        distiller.close()


async def test_async_routed_requests_are_shadowed(disagreeing: Simulator, store_path: Path) -> None:
    distiller = make(store_path)
    try:
        trained(disagreeing, distiller)
        client = distillkit.wrap(disagreeing.async_client(), distiller)
        for _ in range(5):
            response = await client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": KNOWN[2]}]
            )
            assert distillkit.route_info(response).routed
            # Waited for from a thread without an event loop, so this loop can finish its checks.
            assert await asyncio.to_thread(distiller.wait_shadows, 10)
        assert distiller.registry.get("default") is None
        distillkit.unwrap(client)
        await client.close()
    finally:
        distiller.close()


@pytest.mark.parametrize(
    "options",
    [{"shadow_rate": 1.5}, {"shadow_rate": -0.1}, {"shadow_floor": 2.0}, {"shadow_min_samples": 0}],
)
def test_bad_shadow_options_are_config_errors(options: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        Distiller(DistillConfig(path=str(tmp_path / "s")), **options)
    assert raised.value.variable == next(iter(options))


def test_agreement_measures() -> None:
    text = {"role": "assistant", "content": "Answer: yes"}
    assert agreement({}, text, {"content": "Answer:   yes"}) == 1.0
    assert 0.0 < agreement({}, text, {"content": "Answer: no"}) < 1.0
    json_kwargs = {"response_format": {"type": "json_object"}}
    assert agreement(json_kwargs, {"content": '{"a": 1, "b": 2}'}, {"content": '{"b": 2, "a": 1}'}) == 1.0
    assert agreement(json_kwargs, {"content": '{"a": 1}'}, {"content": '{"a": 2}'}) == 0.0

    def call(name: str, arguments: dict[str, Any], id_: str) -> dict[str, Any]:
        return {"id": id_, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}

    same = agreement({}, {"tool_calls": [call("f", {"x": 1}, "a")]}, {"tool_calls": [call("f", {"x": 1}, "b")]})
    assert same == 1.0
    assert agreement({}, {"tool_calls": [call("f", {"x": 1}, "a")]}, {"tool_calls": [call("g", {"x": 1}, "a")]}) == 0
    assert agreement({}, {"content": "hi"}, {"tool_calls": [call("f", {}, "a")]}) == 0.0


async def test_a_shadow_check_asks_the_teacher_the_request_as_it_was_sent(
    simulator: Simulator, store_path: Path
) -> None:
    distiller = make(store_path)
    try:
        trained(simulator, distiller)
        client = distillkit.wrap(simulator.async_client(), distiller)
        messages: list[Any] = [{"role": "user", "content": KNOWN[1]}]
        response = await client.chat.completions.create(model="gpt-4.1", messages=messages)
        assert distillkit.route_info(response).routed
        # The caller goes on with its conversation before the check (a task on this loop) has run.
        messages[0]["content"] = "edited in place"
        messages.append({"role": "assistant", "content": response.choices[0].message.content})
        messages.append({"role": "user", "content": "And a follow-up question?"})
        simulator.reset_log()
        assert await asyncio.to_thread(distiller.wait_shadows, 10)
        asked = simulator.chat_requests("gpt-4.1")
        assert [r["messages"] for r in asked] == [[{"role": "user", "content": KNOWN[1]}]]
        distillkit.unwrap(client)
        await client.close()
    finally:
        distiller.close()
