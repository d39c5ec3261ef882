"""The agreement routing rule: neighbours that got the same teacher answer route a bit below the threshold."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from distillkit import DistillConfig, Distiller
from distillkit.embedders import WordLlamaEmbedder
from distillkit.errors import ConfigError
from distillkit.records import fingerprint
from distillkit.router import ActiveModel, Request, RouteInfo
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
    """A distiller whose store holds TRAINED as trained points with the given teacher answers."""
    made: list[Distiller] = []

    def build(answers: list[str], **config: Any) -> Distiller:
        distiller = Distiller(DistillConfig(path=str(tmp_path / f"store{len(made)}"), **config), embedder=embedder)
        made.append(distiller)
        vectors = embedder.embed(TRAINED)
        distiller.store.upsert(
            [
                Point(
                    str(uuid.uuid4()),
                    {
                        "namespace": "default",
                        "fingerprint": fingerprint(kwargs_for(text)),
                        "query": text,
                        "response": {"role": "assistant", "content": answer},
                        "indexed": True,
                        "distilled_model": STUDENT,
                    },
                    vector.tolist(),
                )
                for text, answer, vector in zip(TRAINED, answers, vectors, strict=True)
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
    distiller.router.rule = "top1"  # the Distiller passes only the threshold to its Router today
    similarity = nearest_similarity(distiller)

    below = decide(distiller, similarity + 0.01)
    at = decide(distiller, similarity)

    assert not below.routed and below.agreeing is None
    assert at.routed and at.reason == "similar request trained"


def test_routing_configuration_from_the_environment() -> None:
    config = DistillConfig.from_env(
        {"DISTILLKIT_ROUTING_RULE": "top1", "DISTILLKIT_NEIGHBOURS": "7", "DISTILLKIT_AGREEMENT_MARGIN": "0.03"},
        dotenv=False,
    )
    assert (config.routing_rule, config.neighbours, config.agreement_margin) == ("top1", 7, 0.03)
    assert DistillConfig().routing_rule == "agreement"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DISTILLKIT_ROUTING_RULE", "knn"),
        ("DISTILLKIT_NEIGHBOURS", "0"),
        ("DISTILLKIT_NEIGHBOURS", "five"),
        ("DISTILLKIT_AGREEMENT_MARGIN", "1.5"),
        ("DISTILLKIT_AGREEMENT_MARGIN", "wide"),
    ],
)
def test_invalid_routing_configuration_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        DistillConfig.from_env({variable: value}, dotenv=False)
    assert raised.value.variable == variable
    assert variable in str(raised.value)
