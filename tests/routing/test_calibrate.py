"""Calibration: a threshold chosen from a namespace's own points, and saved for the router."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _support import ask, train_by_hand

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.cli import main
from distillkit.routing.budget import Label
from distillkit.routing.calibrate import calibrate
from distillkit.testing import Simulator

# Pairs of topics worded alike but answered differently, so that low thresholds lose precision.
TOPICS = {
    "cancel": "cancel my subscription plan",
    "upgrade": "upgrade my subscription plan",
    "delivery": "change my delivery address",
    "billing": "change my billing address",
    "password": "reset my account password",
    "email": "reset my account email",
    "close": "close my savings account",
    "open": "open a savings account",
    "raise": "increase my card limit",
    "lower": "decrease my card limit",
    "refund": "request a refund for an order",
    "transfer": "send money to a friend abroad",
}
TEMPLATES = [
    "How do I {}?",
    "I want to {}",
    "Can you help me {}?",
    "What is the way to {}?",
    "Please tell me how to {}",
    "Steps to {}?",
    "I need to {} today",
    "Is it possible to {} online?",
]
STUDENT = "ft:gpt-4.1-nano-2025-04-14:distillkit::calib01"


def topic_of(text: str) -> str:
    return next((t for t, phrase in TOPICS.items() if phrase in text), "other")


def grouped_answer(request: dict[str, Any]) -> str:
    """Alike within a group of paraphrases, different across groups."""
    text = next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")
    return f"Topic: {topic_of(text)}. Follow the steps in the app."


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(args), out=out), out.getvalue()


@pytest.fixture
def grouped() -> Iterator[Simulator]:
    with Simulator(answer=grouped_answer) as sim:
        yield sim


@pytest.fixture
def namespace(grouped: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Distiller]:
    """A "help" namespace of 96 captured paraphrases in 8 answer groups (real store and embedder)."""
    path = tmp_path / "calib"
    monkeypatch.setenv("DISTILLKIT_PATH", str(path))
    monkeypatch.setenv("DISTILLKIT_ROUTING_RULE", "top1")
    monkeypatch.setenv("DISTILLKIT_EMBEDDER", "wordllama")  # the CLI's Distiller opens the same store
    # WordLlama: these paraphrase groups were sized for it; MiniLM separates the 8 topics so
    # well that no pair disagrees below 0.50, and calibrate then (rightly) trusts no threshold.
    distiller = Distiller(DistillConfig(path=str(path), routing_rule="top1", embedder="wordllama"))
    client = distillkit.wrap(grouped.client(), distiller, namespace="help")
    for phrase in TOPICS.values():
        for template in TEMPLATES:
            ask(client, template.format(phrase))
    assert distiller.flush(10)
    distillkit.unwrap(client)
    yield distiller
    distiller.close()


def test_chosen_threshold_meets_the_target_on_the_data(namespace: Distiller) -> None:
    result = calibrate(namespace.store, namespace.embedder, "help", 0.95)
    assert result.points >= 40 and result.pairs == result.points
    assert result.threshold is not None, result.reason
    # Checked independently: brute-force nearest other query, labelled by its paraphrase group.
    queries = [p.payload["query"] for p in namespace.store.scroll(namespace="help")]
    vectors = namespace.embedder.embed(queries)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    nearest = sims.argmax(axis=1)
    scores = sims.max(axis=1)
    above = [
        topic_of(queries[i]) == topic_of(queries[j])
        for i, j in enumerate(nearest)
        if scores[i] >= result.threshold - 1e-6
    ]
    assert len(above) >= 20
    assert sum(above) / len(above) >= 0.95
    chosen = next(c for c in result.curve if c.threshold == result.threshold)
    assert chosen.pairs == len(above)
    # The lowest such: one step lower misses the target or the support.
    lower = [c for c in result.curve if c.threshold < result.threshold]
    assert all(c.precision < 0.95 or c.pairs < 20 for c in lower)


def test_too_little_data_keeps_the_default(namespace: Distiller) -> None:
    result = calibrate(namespace.store, namespace.embedder, "help", 0.95, min_support=1000)
    assert result.threshold is None and result.reason.startswith("not enough data")
    empty = calibrate(namespace.store, namespace.embedder, "nothing-here", 0.95)
    assert empty.threshold is None and empty.pairs == 0


def test_cli_prints_the_curve_and_save_needs_an_active_model(namespace: Distiller) -> None:
    namespace.close()
    code, out = cli("calibrate", "--namespace", "help", "--target-precision", "0.95")
    assert code == 0
    assert "threshold" in out and "precision" in out and "<- chosen" in out and "chosen threshold: 0." in out
    code, out = cli("calibrate", "--namespace", "help", "--save", "--json")
    report = json.loads(out)
    assert code == 1 and report["threshold"] is not None
    assert report["saved"].startswith("not saved: the namespace has no active model")


def test_save_makes_the_router_use_it(grouped: Simulator, namespace: Distiller) -> None:
    train_by_hand(namespace, "help", STUDENT, grouped)
    namespace.close()
    code, out = cli("calibrate", "--namespace", "help", "--save", "--json")
    report = json.loads(out)
    assert code == 0 and report["saved"] == "saved as the threshold of help"
    chosen = report["threshold"]

    distiller = Distiller.from_env()
    try:
        assert distiller.registry.get("help").threshold == chosen
        assert distiller.status()["help"]["threshold"] == chosen
        client = distillkit.wrap(grouped.client(), distiller, namespace="help")
        probes = [
            "Could you help me cancel my subscription plan",
            "cancel subscription plan",
            "Where can I change my billing address?",
            "increase the limit on my card",
            "how to open savings account",
            "I would like to request a refund for an order now",
            "subscription plan cancellation",  # about 0.88 similar: under the default 0.90
            "raise card limit",  # about 0.87
            "What is the weather like on Mars?",
        ]
        infos = [distillkit.route_info(ask(client, q)) for q in probes]
        assert all(i.similarity is not None for i in infos)
        for info in infos:
            assert info.routed == (info.similarity >= chosen)
            assert info.reason == ("similar request trained" if info.routed else "below threshold")
        # The calibrated threshold routes what the default (0.90) would have sent to the teacher.
        assert chosen < 0.9
        assert any(i.routed and i.similarity < 0.9 for i in infos)
        # An explicit threshold still wins over the calibrated one.
        with distillkit.scope("help", threshold=0.999):
            assert not distillkit.route_info(ask(client, probes[0])).routed
        distillkit.unwrap(client)
    finally:
        distiller.close()


def test_measured_labels_of_the_student_come_before_neighbour_pairs(namespace: Distiller) -> None:
    assert namespace.budget is not None
    # The student measured right at similarity >= 0.75, wrong below (shadow checks, exploration),
    # and right on the gate's held-out points at 0.9 and above: every label counts.
    traffic = [Label(round(0.6 + i / 100, 2), 0.6 + i / 100 >= 0.75 - 1e-9, None, "shadow") for i in range(40)]
    gate = [Label(0.9 + i / 1000, True, None, "gate") for i in range(30)]
    namespace.budget.add("help", [*traffic, *gate])
    result = calibrate(namespace.store, namespace.embedder, "help", 0.95, labels=namespace.budget.labels("help"))
    assert (result.source, result.pairs) == ("labels", 70)
    assert result.threshold == 0.73  # 55 right of 57 at 0.73 (0.965); 55 of 58 at 0.72 (0.948)
    # Too few labels: the stored points' pairs decide, as before.
    fewer = calibrate(namespace.store, namespace.embedder, "help", 0.95, labels=traffic[:10])
    assert fewer.source == "pairs" and fewer.pairs >= 40
    namespace.close()
    code, out = cli("calibrate", "--namespace", "help", "--json")
    report = json.loads(out)
    assert (code, report["source"], report["threshold"]) == (0, "labels", 0.73)
