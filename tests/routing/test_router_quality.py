"""The agreement routing rule: neighbours that got the same teacher answer route a bit below the threshold,
and an untrained point that the teacher answered differently takes a route back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from distillkit import DistillConfig, Distiller
from distillkit.errors import ConfigError
from distillkit.routing.embedders import WordLlamaEmbedder
from distillkit.routing.request import Request, RouteInfo, fingerprint
from distillkit.state import ActiveModel
from distillkit.store import Point

STUDENT = "ft:gpt-4.1-nano-2025-04-14:distillkit::quality"
TRAINED = [
    "Where is my new card?",
    "My new card has still not arrived",
    "When will my new card arrive?",
    "I am still waiting for my new card",
    "How long until my new card arrives?",
]
QUERY = "my new card has not come yet, where is it"


def kwargs_for(text: str) -> dict[str, Any]:
    return {"model": "gpt-4.1", "messages": [{"role": "user", "content": text}]}


@pytest.fixture(scope="module")
def embedder() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


@pytest.fixture
def make(tmp_path: Any, embedder: WordLlamaEmbedder) -> Iterator[Any]:
    """A distiller whose store holds TRAINED as trained points with the given teacher answers.

    ``untrained`` adds (query, answer) points that the teacher answered since the last round.
    """
    made: list[Distiller] = []

    def build(answers: list[str], untrained: Sequence[tuple[str, str]] = (), **config: Any) -> Distiller:
        distiller = Distiller(DistillConfig(path=str(tmp_path / f"store{len(made)}"), **config), embedder=embedder)
        made.append(distiller)
        rows = [(text, answer, True) for text, answer in zip(TRAINED, answers, strict=True)]
        rows += [(text, answer, False) for text, answer in untrained]
        vectors = embedder.embed([text for text, _, _ in rows])
        distiller.store.upsert(
            [
                Point(
                    str(uuid.uuid4()),
                    {
                        "namespace": "default",
                        "fingerprint": fingerprint(kwargs_for(text)),
                        "query": text,
                        "response": {"role": "assistant", "content": answer},
                        "indexed": indexed,
                        **({"distilled_model": STUDENT} if indexed else {}),
                    },
                    vector.tolist(),
                )
                for (text, answer, indexed), vector in zip(rows, vectors, strict=True)
            ]
        )
        distiller.registry.activate(ActiveModel("default", STUDENT))
        return distiller

    yield build
    for distiller in made:
        distiller.close()


def decide(distiller: Distiller, threshold: float | None = None) -> RouteInfo:
    request = Request(kwargs_for(QUERY), namespace="default", threshold=threshold, route=True, capture=True)
    return distiller.router.decide(request)


def nearest_similarity(distiller: Distiller) -> float:
    info = decide(distiller, threshold=1.0)
    assert info.similarity is not None
    return info.similarity


def test_agreeing_neighbours_route_just_below_the_threshold(make: Any) -> None:
    distiller = make(["Cards arrive within 5 working days."] * 5)
    threshold = nearest_similarity(distiller) + 0.01  # within the default 0.02 margin

    info = decide(distiller, threshold)

    assert info.routed and info.model == STUDENT
    assert info.reason == "neighbours agree" and info.agreeing == 5


def test_disagreeing_neighbours_do_not_route_below_the_threshold(make: Any) -> None:
    distiller = make([f"Answer number {i}." for i in range(5)])
    threshold = nearest_similarity(distiller) + 0.01

    info = decide(distiller, threshold)

    assert not info.routed and info.model == "gpt-4.1"
    assert info.reason == "below threshold" and info.agreeing == 1


def test_agreement_never_routes_beyond_the_margin(make: Any) -> None:
    distiller = make(["Cards arrive within 5 working days."] * 5)
    info = decide(distiller, nearest_similarity(distiller) + 0.05)
    assert not info.routed and info.agreeing == 5


def test_answers_that_differ_only_in_whitespace_agree(make: Any) -> None:
    answer = "Cards arrive within 5 working days."
    distiller = make([answer, f"  {answer}", answer.replace(" ", "  "), f"{answer}\n", answer])
    info = decide(distiller, nearest_similarity(distiller) + 0.01)
    assert info.routed and info.agreeing == 5


def test_the_plain_top1_rule_stays_available(make: Any) -> None:
    distiller = make(["Cards arrive within 5 working days."] * 5, routing_rule="top1")
    similarity = nearest_similarity(distiller)

    below = decide(distiller, similarity + 0.01)
    at = decide(distiller, similarity)

    assert not below.routed and below.agreeing is None
    assert at.routed and at.reason == "similar request trained"


CARD = "Cards arrive within 5 working days."
RETURNED = "Your card came back to us undelivered: please confirm your address."
#: Asked since the last training round, answered differently by the teacher.
STUCK = ("my new card has not come yet, where is it now?", RETURNED)
PIN = ("How do I change the PIN of my card?", "Open Settings, then Security, then Change PIN.")


def test_an_untrained_neighbour_with_another_answer_sends_the_request_to_the_teacher(make: Any) -> None:
    distiller = make([CARD] * 5, untrained=[STUCK, PIN])
    similarity = nearest_similarity(distiller)

    info = decide(distiller, similarity - 0.01)  # routed on similarity alone

    assert not info.routed and info.model == "gpt-4.1"
    assert info.reason == "untrained neighbour disagrees" and info.similarity == similarity
    stored = {point.id: point.payload["query"] for point in distiller.store.retrieve([info.vetoed_by or ""])}
    assert stored == {info.vetoed_by: STUCK[0]}


def test_untrained_neighbours_that_agree_or_are_far_keep_the_route(make: Any) -> None:
    same = make([CARD] * 5, untrained=[(STUCK[0], f" {CARD}\n")])  # the same answer, whitespace aside
    far = make([CARD] * 5, untrained=[PIN])

    for distiller in (same, far):
        info = decide(distiller, nearest_similarity(distiller) - 0.01)
        assert info.routed and info.reason == "similar request trained" and info.vetoed_by is None


def test_the_veto_margin_bounds_how_much_less_similar_an_untrained_neighbour_may_be(
    make: Any, embedder: WordLlamaEmbedder
) -> None:
    distiller = make([CARD] * 5, untrained=[PIN])
    query, pin = embedder.embed([QUERY, PIN[0]])
    gap = nearest_similarity(distiller) - float(query @ pin / np.linalg.norm(query) / np.linalg.norm(pin))
    assert gap > 0.02  # the PIN question is the less similar one

    distiller.router.veto_margin = gap - 0.01
    assert decide(distiller, threshold=0.0).routed
    distiller.router.veto_margin = gap + 0.01
    assert decide(distiller, threshold=0.0).reason == "untrained neighbour disagrees"


def test_the_veto_can_be_switched_off(make: Any) -> None:
    distiller = make([CARD] * 5, untrained=[STUCK], veto_margin=None)
    info = decide(distiller, nearest_similarity(distiller) - 0.01)
    assert info.routed and info.vetoed_by is None


def test_free_text_answers_are_never_compared(make: Any) -> None:
    distiller = make([f"Answer number {i}." for i in range(5)], untrained=[STUCK])
    info = decide(distiller, nearest_similarity(distiller) - 0.01)
    assert info.routed and info.agreeing == 1 and info.vetoed_by is None


def test_routing_configuration_from_the_environment() -> None:
    config = DistillConfig.from_env(
        {
            "DISTILLKIT_ROUTING_RULE": "top1",
            "DISTILLKIT_NEIGHBOURS": "7",
            "DISTILLKIT_AGREEMENT_MARGIN": "0.03",
            "DISTILLKIT_VETO_MARGIN": "0.1",
        },
        dotenv=False,
    )
    assert (config.routing_rule, config.neighbours, config.agreement_margin, config.veto_margin) == (
        "top1",
        7,
        0.03,
        0.1,
    )
    assert DistillConfig.from_env({"DISTILLKIT_VETO_MARGIN": " OFF "}, dotenv=False).veto_margin is None
    assert (DistillConfig().routing_rule, DistillConfig().veto_margin) == ("agreement", 0.05)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DISTILLKIT_ROUTING_RULE", "knn"),
        ("DISTILLKIT_NEIGHBOURS", "0"),
        ("DISTILLKIT_NEIGHBOURS", "five"),
        ("DISTILLKIT_AGREEMENT_MARGIN", "1.5"),
        ("DISTILLKIT_AGREEMENT_MARGIN", "wide"),
        ("DISTILLKIT_VETO_MARGIN", "-0.1"),
        ("DISTILLKIT_VETO_MARGIN", "never"),
    ],
)
def test_invalid_routing_configuration_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        DistillConfig.from_env({variable: value}, dotenv=False)
    assert raised.value.variable == variable
    assert variable in str(raised.value)
