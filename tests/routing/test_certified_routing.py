"""Certified routing on an extraction workload (answers never repeat), end to end.

The real SDK over HTTP to the simulator, a real edge store, the default embedder. The teacher
extracts JSON (:mod:`distillkit.testing.extraction`); every fine-tuned student answers a fixed
share of messages right *and sure* (token log-probability -0.01) and the others wrong *and unsure*
(-2.5), so only its own confidence can tell where it may serve: similarity cannot (every message
has the same template-like neighbours), and the cross-check has no repeating answer to compare.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.testing import Reply, Simulator
from distillkit.testing import extraction as workload
from distillkit.training import OpenAIFineTuningProvider

JSON = {"type": "json_object"}
TRAIN = workload.messages(0, 320, off_task=0.0)
TEST = workload.messages(0, 40, split="test", off_task=0.0)
OFF_TASK = [r for r in workload.messages(1, 40, split="test", off_task=1.0)][:10]
MORE = workload.messages(2, 200, split="test", off_task=0.0)
RECORDS = {r.text: r for r in [*TRAIN, *TEST, *OFF_TASK, *MORE]}


def knows(text: str) -> bool:
    """The messages the student has learnt (70%, by a hash of the text)."""
    return hashlib.sha256(text.encode()).digest()[0] < 180


def student(body: dict[str, Any]) -> Reply:
    record = RECORDS[body["messages"][-1]["content"]]
    if knows(record.text):
        return Reply(content=record.content, logprob=-0.01)
    wrong = {**record.answer, "currency": "XXX"}
    return Reply(content=json.dumps(wrong), logprob=-2.5)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(answer=workload.teacher(RECORDS.values()), student_answer=student, job_step_seconds=0.01) as s:
        yield s


@pytest.fixture
def extract(sim: Simulator, tmp_path: Path) -> Iterator[tuple[Distiller, Any]]:
    """A distiller of namespace "extract" (a 0.1 error budget) and a client wrapped with it."""
    config = DistillConfig(path=str(tmp_path / "store"), namespace="extract", min_examples=10, max_error=0.1)
    distiller = Distiller(config, fine_tuning_provider=OpenAIFineTuningProvider(sim.client()))
    client = distillkit.wrap(sim.client(), distiller)
    yield distiller, client
    distillkit.unwrap(client)
    distiller.close()


def ask(client: Any, text: str, **options: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "system", "content": workload.SYSTEM}, {"role": "user", "content": text}],
        response_format=JSON,
        distillkit=options,
    )


def test_an_extraction_namespace_is_certified_by_confidence_and_routes_only_sure_answers(
    extract: tuple[Distiller, Any],
) -> None:
    distiller, client = extract
    for record in TRAIN:
        ask(client, record.text)
    [round_] = distiller.train_now(wait=True, timeout=60)
    # About 70% right on the held-out points: under the 0.8 floor, yet the labels certify where
    # the student is sure, so it is promoted for that region.
    assert round_.status == "succeeded", round_
    assert round_.held_out >= 70 and round_.evaluation is not None
    assert round_.evaluation["fields"]["currency"][0] < round_.evaluation["fields"]["currency"][1]
    assert round_.evaluation["fields"]["intent"][0] == round_.evaluation["fields"]["intent"][1]
    acceptance = distiller.budget.acceptance("extract") if distiller.budget else None
    assert acceptance is not None and acceptance.certified
    assert acceptance.signal in ("confidence", "either") and acceptance.min_confidence is not None

    before = len(distiller.budget.labels("extract")) if distiller.budget else 0
    routed = right = withheld = 0
    for record in TEST:
        response = ask(client, record.text, capture=False)
        info = distillkit.route_info(response)
        assert info is not None
        assert response.choices[0].logprobs is None  # distillkit's own logprobs never reach the caller
        if info.routed:
            routed += 1
            right += json.loads(response.choices[0].message.content) == record.answer
        elif knows(record.text) is False:
            assert info.reason == "student unsure of its answer"
            withheld += 1
    assert routed > 0 and right == routed  # every routed answer is the teacher's
    # Each withheld answer, beside the teacher's, became a label (a disagreement, at its low confidence).
    assert distiller.wait_shadows(10.0)
    assert distiller.budget is not None and withheld > 0
    new = distiller.budget.labels("extract")[before:]
    unsure = [label for label in new if label.confidence is not None and label.confidence < -1.0]
    assert len(unsure) >= withheld and not any(label.agreed for label in unsure)
    for record in OFF_TASK:
        info = distillkit.route_info(ask(client, record.text, capture=False))
        assert info is not None and not info.routed
    status = distiller.status()["extract"]
    assert status["unsure"] > 0
    assert any("confidence" in guard for guard in status["budget"]["guards"])
    assert any("never repeat" in guard for guard in status["budget"]["guards"])


def test_a_candidate_below_the_floor_serves_on_probation_once_its_labels_certify_it(
    extract: tuple[Distiller, Any],
) -> None:
    distiller, client = extract
    for record in TRAIN[:100]:
        ask(client, record.text)
    [round_] = distiller.train_now(wait=True, timeout=60)
    # 25 held-out points, about 70% right: under the floor, and too few labels to certify.
    assert round_.status == "succeeded" and round_.evaluation is not None
    assert round_.evaluation["verdict"] != "promoted"
    active = distiller.registry.get("extract")
    assert active is not None and active.probation
    assert distiller.status()["extract"]["probation"]

    first = distillkit.route_info(ask(client, MORE[0].text, capture=False))
    assert first is not None and not first.routed and first.reason == "on probation: not certified yet"
    # Every refused request is also asked of the student in the background: labels accrue.
    routed = right = 0
    for record in MORE[1:]:
        response = ask(client, record.text, capture=False)
        info = distillkit.route_info(response)
        assert info is not None
        if info.routed:
            routed += 1
            right += json.loads(response.choices[0].message.content) == record.answer
        distiller.shadows.wait(30)
    acceptance = distiller.budget.acceptance("extract") if distiller.budget else None
    assert acceptance is not None and acceptance.certified and acceptance.labels > 60
    assert routed > 0 and right == routed
