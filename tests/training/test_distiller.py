"""End to end through a wrapped client: capture → train → the distilled model answers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.testing import Simulator
from distillkit.training import OpenAIFineTuningProvider

QUESTIONS = [
    "How do I reset my password?",
    "Where can I download my invoices?",
    "Can I change the email address on my account?",
    "Why was my credit card declined yesterday?",
    "How long does international shipping take?",
    "Do you offer student discounts?",
    "What is your refund policy for damaged items?",
    "How can I cancel my subscription?",
    "Is there a mobile app for Android phones?",
    "Which languages does customer support speak?",
    "Can I pick up my order from a store near me?",
    "How do I enable two factor authentication?",
]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(job_step_seconds=0.01) as s:
        yield s


def make_distiller(sim: Simulator, tmp_path: Path, **config: Any) -> Distiller:
    return Distiller(
        DistillConfig(path=str(tmp_path / "s"), min_examples=10, **config),
        fine_tuning_provider=OpenAIFineTuningProvider(sim.client()),
    )


def ask(client: Any, text: str) -> Any:
    return client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "system", "content": "You are a support agent."}, {"role": "user", "content": text}],
    )


def test_train_now_then_a_similar_request_is_answered_by_the_distilled_model(sim: Simulator, tmp_path: Path) -> None:
    distiller = make_distiller(sim, tmp_path)
    client = distillkit.wrap(sim.client(), distiller)
    try:
        for question in QUESTIONS:
            reply = ask(client, question)
            assert reply.model == "gpt-4.1"
        assert distiller.flush(10)
        assert distiller.store.count(namespace="default", indexed=False) == len(QUESTIONS)

        [round_] = distiller.train_now(wait=True, timeout=10)

        assert round_.status == "succeeded" and round_.examples + round_.held_out == len(QUESTIONS)
        assert round_.held_out == 2 and round_.evaluation is not None
        assert round_.evaluation["verdict"] == "promoted" and round_.evaluation["agreement"] == 1.0
        assert round_.model is not None and round_.model.startswith("ft:")
        # The file the job trained on is what was asked and answered.
        job = sim.jobs[round_.job_id]
        content = sim.file_content(job["training_file"]).decode()
        trained = [p.payload["query"] for p in distiller.store.scroll(namespace="default", indexed=True)]
        assert len(trained) == len(QUESTIONS) - 2
        assert all(question in content for question in trained) and "You are a support agent." in content
        held_out = set(QUESTIONS) - set(trained)
        assert not any(question in content for question in held_out)  # never trained on

        # A question the model was trained on (not one of the two held out for the gate).
        routed = ask(client, trained[0])
        info = distillkit.route_info(routed)
        assert info is not None and info.routed
        assert info.model == round_.model and routed.model == round_.model
        assert sim.chat_requests(model=round_.model)  # the student really answered over HTTP
    finally:
        distillkit.unwrap(client)
        distiller.close()


def test_start_runs_training_in_the_background(sim: Simulator, tmp_path: Path) -> None:
    distiller = make_distiller(sim, tmp_path, train_every=0.05)
    client = distillkit.wrap(sim.client(), distiller)
    try:
        for question in QUESTIONS:  # 10 to train on, 2 held out for the promotion gate
            ask(client, question)
        assert distiller.flush(10)

        distiller.start()
        deadline = time.monotonic() + 10
        while distiller.registry.get("default") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        distiller.stop()

        active = distiller.registry.get("default")
        assert active is not None and active.model.startswith("ft:")
        assert len(sim.jobs) == 1
        assert distiller.store.count(indexed=True) == len(QUESTIONS) - 2
    finally:
        distillkit.unwrap(client)
        distiller.close()


def test_judge_mode_asks_the_teacher_about_free_text_answers(tmp_path: Path) -> None:
    from distillkit.training.evaluation import JUDGE_PROMPT

    judged: list[str] = []

    def teacher(body: dict[str, Any]) -> str:
        messages = body["messages"]
        if messages[0]["content"] == JUDGE_PROMPT:  # asked to judge: same first word, same answer
            judged.append(body["model"])
            reference, candidate = (
                messages[1]["content"].split("Reference answer:\n")[1].split("\n\nCandidate answer:\n")
            )
            return "yes" if reference.split()[0] == candidate.split()[0] else "no"
        return f"Sure. {messages[-1]['content']} is a good question, and the full answer is rather long here."

    def student(body: dict[str, Any]) -> str:  # the same answer in other words: text similarity fails
        return "Sure. Well, let me think; the best I can say today is: contact us any time."

    for mode, verdict in (("off", "rejected"), ("teacher", "succeeded")):
        with Simulator(answer=teacher, student_answer=student, job_step_seconds=0.01) as sim:
            distiller = make_distiller(sim, tmp_path / mode, judge=mode)
            client = distillkit.wrap(sim.client(), distiller)
            try:
                for question in QUESTIONS:
                    ask(client, question)
                [round_] = distiller.train_now(wait=True, timeout=10)
                assert round_.status == verdict and round_.evaluation is not None, round_
                assert round_.evaluation["mode"] == ("judge" if mode == "teacher" else "rules")
            finally:
                distillkit.unwrap(client)
                distiller.close()
    assert judged == ["gpt-4.1"] * 2  # once per held-out point, asking the teacher's model
