"""The store breaks while the program runs: the teacher answers, captures are counted as
dropped with a warning, and capture (and routing) resume once the store is back, without a restart.

Nothing is mocked: the folder is really deleted, replaced by a file, closed underneath the
Distiller, or held by another process.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _support import ask, train_by_hand

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.testing import Simulator

STUDENT = "ft:gpt-4.1-nano-2025-04-14:distillkit::reliab01"
BACKOFF = (0.05, 0.2)


@pytest.fixture
def resilient(config: DistillConfig) -> Iterator[Distiller]:
    d = Distiller(config, store_backoff=BACKOFF)
    yield d
    d.close()


@pytest.fixture
def wrapped(simulator: Simulator, resilient: Distiller) -> Iterator[Any]:
    c = distillkit.wrap(simulator.client(), resilient)
    yield c
    distillkit.unwrap(c)
    c.close()


def stored_queries(distiller: Distiller) -> set[str]:
    assert distiller.flush(10)
    return {p.payload["query"] for p in distiller.store.scroll(namespace="default")}


def answered_by_teacher(client: Any, text: str) -> None:
    response = ask(client, text)
    assert response.model == "gpt-4.1"
    assert response.choices[0].message.content == f"Answer: {text}"


def after_backoff() -> None:
    time.sleep(BACKOFF[1] + 0.05)


def test_store_folder_deleted_while_running(
    wrapped: Any, resilient: Distiller, config: DistillConfig, caplog: pytest.LogCaptureFixture
) -> None:
    answered_by_teacher(wrapped, "Where is my new card?")
    assert stored_queries(resilient) == {"Where is my new card?"}

    shutil.rmtree(config.path)
    with caplog.at_level(logging.WARNING, logger="distillkit"):
        answered_by_teacher(wrapped, "How do I close my account?")
        assert resilient.flush(10)
    assert resilient.stats()["default"].dropped == 1
    assert "removed or replaced" in caplog.text

    after_backoff()
    answered_by_teacher(wrapped, "Can I get a refund for a duplicate payment?")
    # Reopened (and created again, owner-only): what the user deleted is gone, new captures land.
    assert stored_queries(resilient) == {"Can I get a refund for a duplicate payment?"}
    assert (Path(config.path).stat().st_mode & 0o777) == 0o700
    assert resilient.stats()["default"].captured == 2


def test_store_folder_replaced_by_a_file(
    wrapped: Any, resilient: Distiller, config: DistillConfig, caplog: pytest.LogCaptureFixture
) -> None:
    answered_by_teacher(wrapped, "Where is my new card?")
    assert resilient.flush(10)
    # Running as root, chmod does not stop writes; a file where the folder was does.
    shutil.rmtree(config.path)
    Path(config.path).write_text("not a folder")

    with caplog.at_level(logging.WARNING, logger="distillkit"):
        answered_by_teacher(wrapped, "How do I close my account?")
        assert resilient.flush(10)
        after_backoff()
        answered_by_teacher(wrapped, "Why was I charged twice?")  # the reopen fails too
        assert resilient.flush(10)
    assert resilient.stats()["default"].dropped == 2
    assert "could not store" in caplog.text

    Path(config.path).unlink()
    after_backoff()
    answered_by_teacher(wrapped, "Can I get a refund for a duplicate payment?")
    assert stored_queries(resilient) == {"Can I get a refund for a duplicate payment?"}


def test_store_closed_underneath(wrapped: Any, resilient: Distiller) -> None:
    answered_by_teacher(wrapped, "Where is my new card?")
    assert resilient.flush(10)
    resilient.store.close()

    answered_by_teacher(wrapped, "How do I close my account?")
    assert resilient.flush(10)
    assert resilient.stats()["default"].dropped == 1

    after_backoff()
    answered_by_teacher(wrapped, "Can I get a refund for a duplicate payment?")
    # Same folder, reopened: the earlier point is still there.
    assert stored_queries(resilient) == {"Where is my new card?", "Can I get a refund for a duplicate payment?"}


_HOLDER = textwrap.dedent(
    """
    import sys
    from distillkit.config import DistillConfig
    from distillkit.routing.embedders import make_embedder
    from distillkit.store.base import EmbedderInfo
    from distillkit.store.edge import EdgeStore

    embedder = make_embedder(DistillConfig().embedder)  # the one the test's Distiller uses
    store = EdgeStore(sys.argv[1], EmbedderInfo(embedder.name, embedder.dim))
    print("holding", flush=True)
    sys.stdin.read()
    store.close()
    """
)


def test_store_locked_by_another_process_while_running(
    wrapped: Any, resilient: Distiller, config: DistillConfig
) -> None:
    answered_by_teacher(wrapped, "Where is my new card?")
    assert resilient.flush(10)
    resilient.store.close()  # the folder is released, and another process takes it
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, config.path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        answered_by_teacher(wrapped, "How do I close my account?")
        assert resilient.flush(10)
        after_backoff()
        answered_by_teacher(wrapped, "Why was I charged twice?")  # reopen: locked by the holder
        assert resilient.flush(10)
        assert resilient.stats()["default"].dropped == 2
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(30) == 0

    after_backoff()
    answered_by_teacher(wrapped, "Can I get a refund for a duplicate payment?")
    assert stored_queries(resilient) == {"Where is my new card?", "Can I get a refund for a duplicate payment?"}


def test_routing_resumes_when_the_store_is_back(simulator: Simulator, wrapped: Any, resilient: Distiller) -> None:
    ask(wrapped, "Where is my new card?")
    train_by_hand(resilient, "default", STUDENT, simulator)
    assert ask(wrapped, "Where is my new card?").model == STUDENT

    resilient.store.close()
    response = ask(wrapped, "Where is my new card?")
    assert response.model == "gpt-4.1"
    assert distillkit.route_info(response).reason == "lookup failed: StoreError"
    assert resilient.stats()["default"].store_errors == 1

    after_backoff()
    assert ask(wrapped, "Where is my new card?").model == STUDENT


def test_a_store_given_by_the_caller_is_never_reopened(simulator: Simulator, config: DistillConfig) -> None:
    from distillkit.routing.embedders import make_embedder
    from distillkit.store.base import EmbedderInfo
    from distillkit.store.edge import EdgeStore

    embedder = make_embedder(config.embedder)
    store = EdgeStore(config.path, EmbedderInfo(embedder.name, embedder.dim))
    distiller = Distiller(config, store=store, embedder=embedder, store_backoff=BACKOFF)
    client = distillkit.wrap(simulator.client(), distiller)
    try:
        store.close()
        answered_by_teacher(client, "How do I close my account?")
        assert distiller.flush(10)
        assert distiller.store is store  # the caller owns it: still theirs, still closed
        assert distiller.stats()["default"].dropped == 1
    finally:
        distiller.close()


def test_close_after_the_folder_was_deleted_does_not_raise(
    simulator: Simulator, config: DistillConfig, caplog: pytest.LogCaptureFixture
) -> None:
    distiller = Distiller(config)
    client: Any = distillkit.wrap(simulator.client(), distiller)
    answered_by_teacher(client, "Where is my new card?")
    assert distiller.flush(10)
    shutil.rmtree(config.path)
    with caplog.at_level(logging.WARNING, logger="distillkit"):
        distiller.close()
    assert "could not close the store cleanly" in caplog.text
