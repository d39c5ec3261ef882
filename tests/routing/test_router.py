"""The data path end to end: capture → (training) → similar requests answered by the distilled model."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any

import numpy as np
import openai
import pytest
from _support import KNOWN, Captures, ask, train_by_hand, train_known

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.routing.embedders import WordLlamaEmbedder
from distillkit.testing import Simulator

STUDENT = "ft:gpt-4.1-nano-2025-04-14:distillkit::manual01"


@pytest.fixture
def trained(simulator: Simulator, client: Any, distiller: Distiller) -> Any:
    """A namespace whose distilled model was trained on KNOWN."""
    train_known(client, distiller, STUDENT, simulator)
    return client


def test_captured_requests_are_stored_unindexed(client: Any, distiller: Distiller) -> None:
    for text in KNOWN:
        ask(client, text)
    assert distiller.flush(10)
    points = list(distiller.store.scroll(namespace="default"))
    assert sorted(p.payload["query"] for p in points) == sorted(KNOWN)
    assert {p.payload["indexed"] for p in points} == {False}
    payload = points[0].payload
    assert payload["teacher_model"] == "gpt-4.1"
    assert payload["response"]["content"].startswith("Answer: ")
    assert payload["usage"]["total_tokens"] > 0
    assert payload["fingerprint"] and payload["created_at"] > 0


def test_similar_request_is_answered_by_the_distilled_model(simulator: Simulator, trained: Any) -> None:
    response = ask(trained, "Where is my new card?!")

    info = distillkit.route_info(response)
    assert info.routed and info.model == STUDENT
    assert info.similarity >= 0.9 and info.neighbour_id
    assert response.model == STUDENT
    assert simulator.chat_requests()[-1]["model"] == STUDENT


def test_dissimilar_request_goes_to_the_teacher(trained: Any) -> None:
    response = ask(trained, "Can I change the PIN of my credit card at an ATM abroad?")
    info = distillkit.route_info(response)
    assert not info.routed and info.reason in ("below threshold", "no trained neighbour")
    assert response.model == "gpt-4.1"


def test_another_task_never_borrows_the_distilled_model(trained: Any) -> None:
    system = {"role": "system", "content": "Translate to French."}
    response = trained.chat.completions.create(
        model="gpt-4.1", messages=[system, {"role": "user", "content": KNOWN[0]}]
    )
    assert distillkit.route_info(response).routed is False
    other_teacher = ask(trained, KNOWN[0], model="gpt-4.1-mini")
    assert distillkit.route_info(other_teacher).routed is False


def test_requests_that_must_not_be_routed(trained: Any) -> None:
    for kwargs, reason in [({"n": 2}, "n>1"), ({"logprobs": True}, "logprobs")]:
        response = ask(trained, KNOWN[0], **kwargs)
        assert distillkit.route_info(response).reason == f"not routable: {reason}"
    image = trained.chat.completions.create(
        model="gpt-4.1",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": KNOWN[0]},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    )
    assert distillkit.route_info(image).reason == "not routable: non-text content"


def test_threshold_from_scope_wins(trained: Any) -> None:
    with distillkit.scope(threshold=1.0):
        response = ask(trained, "Where is my new card, please?")
    assert distillkit.route_info(response).reason == "below threshold"


def test_routed_stream_and_raw_response(simulator: Simulator, trained: Any) -> None:
    chunks = list(ask(trained, KNOWN[1], stream=True))
    assert {c.model for c in chunks} == {STUDENT}
    raw = trained.chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=[{"role": "user", "content": KNOWN[2]}]
    )
    assert raw.parse().model == STUDENT
    assert distillkit.route_info(raw).routed


@pytest.mark.parametrize("fault", ["404", "500", "timeout", "refused"])
def test_distilled_model_failure_falls_back_to_the_teacher(
    simulator: Simulator, trained: Any, distiller: Distiller, fault: str
) -> None:
    client = trained
    if fault == "404":
        simulator.remove_model(STUDENT)
    elif fault == "500":
        simulator.inject("chat", status=500, model=STUDENT)
    elif fault == "timeout":
        simulator.inject("chat", latency=2.0, model=STUDENT)
        client = trained.with_options(timeout=0.3)
    else:
        distiller.llm_provider = distillkit.CompatibleServerProvider("http://127.0.0.1:9/v1")
    captures = Captures(distiller)

    response = ask(client, KNOWN[0])

    assert response.model == "gpt-4.1"
    info = distillkit.route_info(response)
    assert not info.routed and info.reason.startswith("distilled model failed")
    assert distiller.stats()["default"].distilled_failures == 1
    assert len(captures.flushed()) in (0, 1)  # the teacher's answer is training data (or a duplicate)


async def test_async_routing(simulator: Simulator, trained: Any, distiller: Distiller) -> None:
    client = distillkit.wrap(simulator.async_client(), distiller)
    response = await client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": KNOWN[2]}])
    assert response.model == STUDENT
    stream = await client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": KNOWN[1]}], stream=True
    )
    assert {c.model async for c in stream} == {STUDENT}
    simulator.inject("chat", status=503, model=STUDENT)
    fallback = await client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": KNOWN[0]}])
    assert fallback.model == "gpt-4.1"
    await client.close()


def test_namespaces_never_see_each_others_points(simulator: Simulator, trained: Any, distiller: Distiller) -> None:
    with distillkit.scope("billing"):
        ask(trained, "Why was I charged twice?")
    train_by_hand(distiller, "billing", "ft:gpt-4.1-nano-2025-04-14:distillkit::billing1", simulator)

    with distillkit.scope("billing"):
        response = ask(trained, KNOWN[0])  # trained in "default", not in "billing"
    assert distillkit.route_info(response).routed is False
    assert {p.payload["query"] for p in distiller.store.scroll(namespace="billing")} == {"Why was I charged twice?"}


def test_store_unavailable_means_the_teacher_answers(simulator: Simulator, config: DistillConfig) -> None:
    holder = Distiller(config)
    holder.store  # noqa: B018 - opens the folder and holds its lock
    blocked = Distiller(config)
    client = distillkit.wrap(simulator.client(), blocked)
    try:
        holder.registry.activate(__import__("distillkit.state").state.ActiveModel("default", STUDENT))
        response = ask(client, KNOWN[0])
        assert response.model == "gpt-4.1"
        assert blocked.flush(10)
        stats = blocked.stats()["default"]
        assert stats.store_errors >= 1 and stats.dropped == 1 and stats.captured == 0
    finally:
        blocked.close()
        holder.close()


def test_a_lookup_during_an_index_build_goes_to_the_teacher_and_the_store_stays_open(
    trained: Any, distiller: Distiller
) -> None:
    store = distiller.store
    pid = store.engine_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the engine answers nothing: a long index build, as far as we can tell
    try:
        store.optimize(wait=False)
        response = ask(trained, KNOWN[0])
    finally:
        os.kill(pid, signal.SIGCONT)
    info = distillkit.route_info(response)
    assert response.model == "gpt-4.1" and info.reason == "store busy: building its index"
    assert distiller.stats()["default"].store_busy == 1 and distiller.stats()["default"].store_errors == 0
    assert distiller.store is store  # not a failure: nothing reopened
    deadline = time.monotonic() + 120  # a loaded machine may take a while to finish the build
    while store.indexing and time.monotonic() < deadline:
        time.sleep(0.05)
    assert distillkit.route_info(ask(trained, KNOWN[0])).routed  # the build is over: routed again


def test_the_inline_engine_is_a_setting(config: DistillConfig) -> None:
    distiller = Distiller(dataclasses.replace(config, edge_engine="inline"))
    try:
        assert distiller.store.engine == "inline" and distiller.store.engine_pid is None
    finally:
        distiller.close()


def test_data_survives_a_restart(simulator: Simulator, config: DistillConfig) -> None:
    first = Distiller(config)
    client = distillkit.wrap(simulator.client(), first)
    train_known(client, first, STUDENT, simulator)
    first.close()

    second = Distiller(config)
    distillkit.wrap(client, second)
    try:
        assert second.store.count(namespace="default", indexed=True) == len(KNOWN)
        assert ask(client, KNOWN[0]).model == STUDENT
    finally:
        second.close()


def test_near_duplicates_bump_a_counter(client: Any, distiller: Distiller) -> None:
    for _ in range(3):
        ask(client, "Where is my new card?")
    ask(client, "Completely different: how do I close my account?")
    assert distiller.flush(10)
    points = {p.payload["query"]: p.payload for p in distiller.store.scroll(namespace="default")}
    assert len(points) == 2
    assert points["Where is my new card?"]["count"] == 3
    assert distiller.stats()["default"].deduplicated == 2


class CountingEmbedder:
    """The real default embedder, counting the texts it embeds."""

    def __init__(self) -> None:
        self._inner = WordLlamaEmbedder()
        self.name, self.dim = self._inner.name, self._inner.dim
        self.texts: list[str] = []

    def embed(self, texts: Any) -> np.ndarray:
        self.texts.extend(texts)
        return self._inner.embed(texts)


def test_the_routing_embedding_is_reused_for_capture(simulator: Simulator, config: DistillConfig) -> None:
    embedder = CountingEmbedder()
    distiller = Distiller(config, embedder=embedder)
    client = distillkit.wrap(simulator.client(), distiller)
    try:
        ask(client, KNOWN[0])  # no model yet: embedded once, by the capture writer
        train_by_hand(distiller, "default", STUDENT, simulator)
        ask(client, "A question nobody asked before about mortgages")  # embedded once, for routing
        assert distiller.flush(10)
        assert embedder.texts == [KNOWN[0], "A question nobody asked before about mortgages"]
    finally:
        distiller.close()


def test_openai_errors_on_the_teacher_path_are_unchanged_when_routing(simulator: Simulator, trained: Any) -> None:
    simulator.inject("chat", status=429, model="gpt-4.1")
    with pytest.raises(openai.RateLimitError):
        ask(trained, "Something the student has never seen about stocks")


def test_a_request_the_teacher_answered_differently_since_training_is_not_routed(
    simulator: Simulator, client: Any, distiller: Distiller
) -> None:
    """The veto end to end: the teacher's newer, different answer to a close request wins over the trained one."""
    arrival, damaged = "Cards arrive within 5 working days.", "Sorry! We are sending a replacement card."

    def teacher(request: dict[str, Any]) -> str:
        return damaged if "damaged" in request["messages"][-1]["content"] else arrival

    simulator.answer = teacher
    for text in ("Where is my new card?", "My new card has still not arrived", "When will my new card arrive?"):
        ask(client, text)
    train_by_hand(distiller, "default", STUDENT, simulator)
    with distillkit.scope(route=False):  # asked since the training round: the teacher answers, it is captured
        ask(client, "My new card arrived damaged")
    assert distiller.flush(10)
    [untrained] = list(distiller.store.scroll(namespace="default", indexed=False))

    with distillkit.scope(threshold=0.5):  # similar enough to the trained card questions to be routed
        response = ask(client, "my new card has arrived damaged")

    info = distillkit.route_info(response)
    assert not info.routed and info.reason == "untrained neighbour disagrees"
    assert info.vetoed_by == untrained.id and info.agreeing == 3
    assert response.model == "gpt-4.1" and response.choices[0].message.content == damaged
    with distillkit.scope(threshold=0.5):
        assert distillkit.route_info(ask(client, "When will my new card arrive??")).routed  # the trained kind still is


def _conversation(earlier: str, last: str = "How long does it take?") -> list[dict[str, str]]:
    return [
        {"role": "user", "content": earlier},
        {"role": "assistant", "content": "Sure, I can help with that."},
        {"role": "user", "content": last},
    ]


def test_conversations_that_end_alike_but_differ_before_are_different_requests(
    simulator: Simulator, client: Any, distiller: Distiller
) -> None:
    client.chat.completions.create(model="gpt-4.1", messages=_conversation("I ordered a new card last week."))
    train_by_hand(distiller, "default", STUDENT, simulator)

    same = client.chat.completions.create(model="gpt-4.1", messages=_conversation("I ordered a new card last week!"))
    assert distillkit.route_info(same).routed
    other = client.chat.completions.create(
        model="gpt-4.1", messages=_conversation("I sent an international bank transfer to Germany.")
    )
    info = distillkit.route_info(other)
    assert not info.routed and info.reason == "below threshold"
    assert info.similarity is not None and info.similarity < 0.8  # the last words alone would give 1.0


def test_a_text_longer_than_the_embedders_window_goes_to_the_teacher(
    simulator: Simulator, client: Any, distiller: Distiller
) -> None:
    long = "Please check every transaction on my account this month. " * 40  # about 400 tokens
    assert not distiller.embedder.fits(long)  # type: ignore[attr-defined]
    ask(client, long)
    train_by_hand(distiller, "default", STUDENT, simulator)  # the very same text is trained

    info = distillkit.route_info(ask(client, long))
    assert not info.routed and info.reason == "longer than the embedder's window"
    assert info.model == "gpt-4.1"
