"""@distilled and scope(): options that follow the code, through threads and asyncio tasks."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from _support import Captures, ask

import distillkit
from distillkit import ConfigError, Distiller
from distillkit.testing import Simulator


def test_decorator_keeps_identity_bare_and_with_options() -> None:
    @distillkit.distilled
    def bare(question: str, *, tone: str = "polite") -> str:
        """Answer a question."""
        return question

    @distillkit.distilled(namespace="support", threshold=0.95)
    async def configured(question: str) -> str:
        """Answer asynchronously."""
        return question

    assert bare.__name__ == "bare" and bare.__doc__ == "Answer a question."
    assert str(inspect.signature(bare)) == "(question: 'str', *, tone: 'str' = 'polite') -> 'str'"
    assert configured.__name__ == "configured" and inspect.iscoroutinefunction(configured)
    assert bare("hi") == "hi"


def test_decorator_rejects_bad_options_when_decorating() -> None:
    with pytest.raises(ConfigError, match=r"threshold"):
        distillkit.distilled(threshold=1.5)
    with pytest.raises(ConfigError, match="keywords"):
        distillkit.distilled("support")  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="namespce"):
        distillkit.distilled(namespce="x")  # type: ignore[call-overload]


def test_scope_intercepts_a_client_that_was_never_wrapped(simulator: Simulator, distiller: Distiller) -> None:
    captures = Captures(distiller)
    client = simulator.client()
    with distillkit.scope("support", distiller=distiller):
        response = ask(client, "inside")
    ask(client, "outside")

    assert distillkit.route_info(response).namespace == "support"
    assert [(c.query, c.namespace) for c in captures.flushed()] == [("inside", "support")]


def test_decorated_functions_route_under_their_namespace(client: Any, captures: Captures) -> None:
    @distillkit.distilled
    def classify(text: str) -> Any:
        return ask(client, text)

    @distillkit.distilled(namespace="support")
    def answer(text: str) -> Any:
        return ask(client, text)

    classify("a")
    answer("b")
    ask(client, "c")
    namespaces = [c.namespace for c in captures.flushed()]
    assert namespaces == [f"{__name__}.{classify.__qualname__}", "support", "default"]


def test_scopes_nest_inner_values_win(client: Any, captures: Captures) -> None:
    with distillkit.scope("outer", capture=True), distillkit.scope(threshold=0.5):
        inner = ask(client, "inner")
        with distillkit.scope(capture=False):
            ask(client, "not captured")
    assert distillkit.route_info(inner).namespace == "outer"
    assert [c.query for c in captures.flushed()] == ["inner"]


def test_threads_with_copied_context_keep_their_scope(client: Any, captures: Captures) -> None:
    def work(namespace: str) -> None:
        with distillkit.scope(namespace):
            barrier.wait()  # both scopes are open at the same time
            ask(client, f"from {namespace}")

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=work, args=(ns,)) for ns in ("alpha", "beta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    with distillkit.scope("gamma"), ThreadPoolExecutor(2) as pool:
        context = contextvars.copy_context()
        pool.submit(context.run, ask, client, "copied").result()
        pool.submit(ask, client, "plain thread").result()  # a bare thread does not inherit it

    by_query = {c.query: c.namespace for c in captures.flushed()}
    assert by_query == {"from alpha": "alpha", "from beta": "beta", "copied": "gamma", "plain thread": "default"}


async def test_asyncio_tasks_keep_their_scope(simulator: Simulator, distiller: Distiller) -> None:
    captures = Captures(distiller)
    client = distillkit.wrap(simulator.async_client(), distiller)

    @distillkit.distilled(namespace="first")
    async def first() -> None:
        await asyncio.sleep(0.01)
        await client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "one"}])

    async def second() -> None:
        async with distillkit.scope("second"):
            await client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "two"}])

    await asyncio.gather(first(), second(), asyncio.to_thread(lambda: None))
    assert {c.query: c.namespace for c in captures.flushed()} == {"one": "first", "two": "second"}
    await client.close()


def test_key_function_replaces_the_query(client: Any, captures: Captures) -> None:
    with distillkit.scope(key=lambda messages: messages[-1]["content"].upper()):
        ask(client, "shout")
    assert [c.query for c in captures.flushed()] == ["SHOUT"]
