"""Issue 14: defects found by using the public API as a new user would (items 7, 8, 9, 13)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import openai
import pytest
import wrapt
from _support import KNOWN, Captures, ask, train_known
from openai.resources.chat.completions import Completions

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.testing import Simulator

STUDENT = "ft:gpt-4.1-nano-2025-04-14:distillkit::defects1"


@pytest.fixture
def trained(simulator: Simulator, client: Any, distiller: Distiller) -> Any:
    train_known(client, distiller, STUDENT, simulator)
    return client


# --- item 7: a failing student falls back at once, whatever the caller's retry settings ------------


def test_failing_student_is_tried_once_with_a_default_configured_client(
    simulator: Simulator, trained: Any, distiller: Distiller
) -> None:
    default_client = distillkit.wrap(openai.OpenAI(base_url=simulator.base_url, api_key="sk-simulator"), distiller)
    assert default_client.max_retries == 2  # the SDK's default, which the student must not inherit
    simulator.inject("chat", status=500, model=STUDENT, times=None)
    simulator.reset_log()

    response = ask(default_client, KNOWN[0])

    assert response.model == "gpt-4.1"
    assert distillkit.route_info(response).reason.startswith("distilled model failed")
    assert len(simulator.chat_requests(model=STUDENT)) == 1
    assert len(simulator.chat_requests(model="gpt-4.1")) == 1


# --- item 8: unwrap() leaves other libraries' instrumentation in place ---------------------------


def test_unwrap_keeps_a_wrapt_patch_stacked_on_top(simulator: Simulator, distiller: Distiller) -> None:
    original = Completions.__dict__["create"]
    seen: list[str] = []

    def tracer(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        seen.append(kwargs["messages"][-1]["content"])
        return wrapped(*args, **kwargs)

    client = distillkit.wrap(simulator.client(), distiller)
    try:
        wrapt.wrap_function_wrapper(Completions, "create", tracer)  # e.g. Langfuse, OpenTelemetry
        distillkit.unwrap(client)
        response = ask(client, "traced after unwrap")
        assert seen == ["traced after unwrap"]
        assert distillkit.route_info(response) is None  # and distillkit is out of the way
        client = distillkit.wrap(client, distiller)  # wrapping again works, and is not stacked twice
        assert distillkit.route_info(ask(client, "wrapped again")) is not None
        assert seen == ["traced after unwrap", "wrapped again"]
        distillkit.unwrap(client)
    finally:
        Completions.create = original  # type: ignore[method-assign]


# --- item 9: the SDK's own message objects in a conversation ----------------------------------


def test_sdk_message_objects_keep_a_conversation_routable(trained: Any, captures: Captures) -> None:
    first = ask(trained, "Can I pay my rent with a credit card from another bank?")
    messages: list[Any] = [{"role": "user", "content": "Can I pay my rent with a credit card from another bank?"}]
    messages.append(first.choices[0].message)  # the standard tool-calling / chat loop
    messages.append({"role": "user", "content": KNOWN[0]})

    response = trained.chat.completions.create(model="gpt-4.1", messages=messages)

    info = distillkit.route_info(response)
    assert info is not None and not info.reason.startswith("not routable"), info.reason


# --- item 13 -----------------------------------------------------------------------------------


def test_one_scope_object_entered_by_several_threads(client: Any, captures: Captures) -> None:
    shared = distillkit.scope("support")
    both_in = threading.Barrier(2)
    first_out = threading.Event()
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            with shared:
                both_in.wait(10)
                if index == 1:
                    first_out.wait(10)  # the thread that entered last leaves last
                ask(client, f"scoped question {index}")
            if index == 0:
                first_out.set()
        except BaseException as exc:
            errors.append(exc)
            first_out.set()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    threads[0].start()
    while not both_in.n_waiting:
        pass
    threads[1].start()
    for t in threads:
        t.join(20)
    assert errors == []
    assert sorted(c.namespace for c in captures.flushed()) == ["support", "support"]


async def test_one_scope_object_entered_by_concurrent_tasks(simulator: Simulator, distiller: Distiller) -> None:
    client = distillkit.wrap(simulator.async_client(), distiller)
    captures = Captures(distiller)
    shared = distillkit.scope("support")
    both_in = asyncio.Event()
    entered = 0

    async def work(index: int) -> str:
        nonlocal entered
        async with shared:
            entered += 1
            if entered == 2:
                both_in.set()
            await both_in.wait()
            await asyncio.sleep(0.01 * (1 - index))  # the first task in leaves last
            response = await client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": f"task {index}"}]
            )
            return str(response.choices[0].message.content)

    await asyncio.gather(work(0), work(1))
    assert sorted(c.namespace for c in captures.flushed()) == ["support", "support"]


def test_close_stops_later_calls_from_reopening_the_store(simulator: Simulator, tmp_path: Path) -> None:
    config = DistillConfig(path=str(tmp_path / "store"))
    distiller = Distiller(config)
    client = distillkit.wrap(simulator.client(), distiller)
    train_known(client, distiller, STUDENT, simulator)  # later calls look the store up
    distiller.close()

    for _ in range(2):  # the second call comes after the reopen backoff (1 s) of a failed store
        response = ask(client, KNOWN[0])  # still answered (by the teacher: the Distiller is closed)
        assert response.model == "gpt-4.1"
        time.sleep(1.2)

    other = Distiller(config)  # the folder is free: nothing reopened it
    try:
        assert other.status()["default"]["stored"] == len(KNOWN)
    finally:
        other.close()
        distillkit.unwrap(client)


def test_a_key_function_that_raises_never_reaches_the_caller(client: Any, captures: Captures) -> None:
    def broken_key(messages: Any) -> str:
        raise KeyError("no such field")

    with distillkit.scope("support", key=broken_key):
        response = ask(client, "Where is my card?")
    assert response.model == "gpt-4.1"
    assert distillkit.route_info(response) is not None


def test_a_distiller_never_closed_is_not_kept_alive_by_its_writer(simulator: Simulator, tmp_path: Path) -> None:
    distiller = Distiller(DistillConfig(path=str(tmp_path / "store")))
    client = distillkit.wrap(simulator.client(), distiller)
    ask(client, "start the writer")
    assert distiller.flush(10)
    distillkit.unwrap(client)
    ref = weakref.ref(distiller)
    del distiller, client
    deadline = time.monotonic() + 20  # the idle writer thread ends after about a second
    while ref() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.2)
    assert ref() is None


async def _routed_once(simulator: Simulator, distiller: Distiller) -> Any:
    client = distillkit.wrap(simulator.async_client(), distiller)
    response = await client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": KNOWN[0]}])
    return distillkit.route_info(response)


def test_compatible_server_student_works_from_two_event_loops(simulator: Simulator, tmp_path: Path) -> None:
    config = DistillConfig(path=str(tmp_path / "store"), distilled_base_url=simulator.base_url)
    distiller = Distiller(config)
    try:
        client = distillkit.wrap(simulator.client(), distiller)
        train_known(client, distiller, STUDENT, simulator)
        first = asyncio.run(_routed_once(simulator, distiller))
        second = asyncio.run(_routed_once(simulator, distiller))  # a new loop, as a worker or a test makes
        assert first.routed and second.routed, (first.reason, second.reason)
    finally:
        distiller.close()


def test_training_uses_the_wrapped_clients_key_and_base_url(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)  # the key is given in code, as many users do
    distiller = Distiller(DistillConfig(path=str(tmp_path / "store"), min_examples=10, holdout=0.0))
    try:
        client = distillkit.wrap(simulator.client(), distiller)
        for i in range(12):
            ask(client, f"Where is my card number {i}?")
        [round_] = distiller.train_now()
        assert round_.status not in ("failed", "error"), round_.reason
        assert round_.job_id
    finally:
        distiller.close()


async def test_async_calls_read_the_registry_off_the_event_loop(simulator: Simulator, tmp_path: Path) -> None:
    distiller = Distiller(DistillConfig(path=str(tmp_path / "store")))
    on_loop: list[bool] = []
    refresh = distiller.registry.refresh

    def observed_refresh() -> None:  # the real read, noting which thread does it
        on_loop.append(threading.current_thread() is threading.main_thread())
        refresh()

    distiller.registry.refresh = observed_refresh  # type: ignore[method-assign]
    try:
        client = distillkit.wrap(simulator.async_client(), distiller)
        await client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "first"}])
        assert on_loop and not any(on_loop)  # the first read also opened the store: off the loop
    finally:
        distiller.close()
