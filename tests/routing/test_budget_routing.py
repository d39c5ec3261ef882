"""The error budget end to end: the real SDK over HTTP to the simulator, a real edge store, WordLlama.

A synthetic namespace with known student errors: BANKING77 questions of six intents, the teacher
answers each intent with its canned reply, and every fine-tuned model answers two of the intents
wrongly (the simulator's ``student_wrong``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.cli import main
from distillkit.testing import Simulator
from distillkit.training import OpenAIFineTuningProvider

INTENTS = ["card_arrival", "pin_blocked", "request_refund", "exchange_charge", "top_up_limits", "visa_or_mastercard"]
WRONG = {"request_refund", "top_up_limits"}


def _texts() -> dict[str, list[str]]:
    rows = csv.DictReader(resources.files("distillkit").joinpath("data/banking77_sample.csv").open(encoding="utf-8"))
    out: dict[str, list[str]] = {}
    for row in rows:
        if row["category"] in INTENTS:
            out.setdefault(row["category"], []).append(row["text"])
    return out


TEXTS = _texts()
INTENT_OF = {text: intent for intent, texts in TEXTS.items() for text in texts}


def canned(intent: str) -> str:
    return f"[{intent}] Thanks for asking; here is what to do."


def teacher(body: dict[str, Any]) -> str:
    return canned(INTENT_OF.get(body["messages"][-1]["content"], "unknown"))


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(answer=teacher, job_step_seconds=0.01) as s:
        s.student_wrong(lambda body: INTENT_OF.get(body["messages"][-1]["content"]) in WRONG)
        yield s


def trained_distiller(sim: Simulator, tmp_path: Path, **config: Any) -> tuple[Distiller, Any]:
    """Capture 12 questions per intent and train; the gate's held-out answers become labels, but
    its floor is 0: two intents are wrong on purpose, and which points are held out is random.

    The cross-check is off unless asked for: the simulator's wrong answers are unlike any teacher
    answer, so it would stop every one of them before the budget ever saw it."""
    settings: dict[str, Any] = {
        "path": str(tmp_path / "store"),
        "min_examples": 10,
        "promotion_floor": 0.0,
        "cross_check": None,
    }
    distiller = Distiller(
        DistillConfig(**{**settings, **config}),
        fine_tuning_provider=OpenAIFineTuningProvider(sim.client()),
        shadow_rate=1.0,
    )
    client = distillkit.wrap(sim.client(), distiller)
    for intent in INTENTS:
        for text in TEXTS[intent][:12]:
            ask(client, text)
    [round_] = distiller.train_now(wait=True, timeout=30)
    assert round_.status == "succeeded", round_
    return distiller, client


def ask(client: Any, text: str) -> Any:
    return client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": text}])


def test_routed_disagreement_stays_within_the_budget(sim: Simulator, tmp_path: Path) -> None:
    distiller, client = trained_distiller(sim, tmp_path, max_error=0.2, explore_rate=1.0)
    try:
        traffic = [text for intent in INTENTS for text in TEXTS[intent][12:]]
        labelling, measured = traffic[0::2], traffic[1::2]
        for text in labelling:  # every routed answer is checked against the teacher: labels
            ask(client, text)
            assert distiller.flush(10)
        acceptance = distiller.budget.acceptance("default")
        assert acceptance is not None and acceptance.labels >= 17

        routed = wrong = rule_routed = rule_wrong = 0
        for text in measured:
            reply = ask(client, text)
            info = distillkit.route_info(reply)
            assert info is not None
            if info.routed:
                routed += 1
                wrong += reply.choices[0].message.content != canned(INTENT_OF[text])
            # What the similarity rule alone (threshold 0.9) would have routed, and got wrong:
            if info.similarity is not None and info.similarity >= 0.9:
                rule_routed += 1
                rule_wrong += INTENT_OF[text] in WRONG
            assert distiller.flush(10)

        print(f"budget: {wrong}/{routed} routed answers wrong; similarity rule: {rule_wrong}/{rule_routed}")
        assert routed >= 20  # it routes the intents the student answers right, more than the rule does
        assert routed > rule_routed
        assert wrong / routed <= 0.2
        # The namespace is hard enough that the budget matters: similarity alone routes wrong answers
        # (measured: 2 or 3 of 7 or 8, against 0 of about 50 within the budget).
        assert rule_wrong >= 1
        status = distiller.status()["default"]["budget"]
        assert status is not None and status["max_error"] == 0.2
    finally:
        distillkit.unwrap(client)
        distiller.close()


def test_exploration_labels_routed_and_refused_requests(sim: Simulator, tmp_path: Path) -> None:
    distiller, client = trained_distiller(sim, tmp_path, explore_rate=1.0)
    distiller.shadows.rate = 0.0  # only exploration asks the other side
    try:
        before = {label.source for label in distiller.budget.labels("default")}
        assert before == {"gate"}  # the promotion gate's held-out points
        teacher_calls = len(sim.chat_requests(model="gpt-4.1"))
        student_calls = len(sim.chat_requests()) - teacher_calls
        for intent in INTENTS:
            for text in TEXTS[intent][12:20]:
                ask(client, text)
                assert distiller.flush(10)
        explored = [label for label in distiller.budget.labels("default") if label.source == "explore"]
        assert explored, "no exploration label"
        # Routed requests were also asked of the teacher, in the background (not by the caller).
        assert len(sim.chat_requests(model="gpt-4.1")) > teacher_calls
        # A wrong intent gets blocked and is then explored by asking the student in the background.
        acceptance = distiller.budget.acceptance("default")
        assert acceptance is not None and acceptance.blocked
        assert len(sim.chat_requests()) - len(sim.chat_requests(model="gpt-4.1")) > student_calls
        assert any(not label.agreed for label in explored)
    finally:
        distillkit.unwrap(client)
        distiller.close()


def test_without_labels_the_configured_rule_decides(sim: Simulator, tmp_path: Path) -> None:
    distiller, client = trained_distiller(sim, tmp_path, holdout=0.0, explore_rate=1.0)
    distiller.shadows.rate = 0.0
    try:
        assert distiller.budget.acceptance("default") is None  # no gate, no shadow: no labels
        reply = ask(client, TEXTS["card_arrival"][0])  # trained verbatim
        info = distillkit.route_info(reply)
        assert info is not None and info.routed and info.reason == "similar request trained"
        assert distiller.flush(10)
        assert distiller.budget.labels("default") == []  # and nothing is explored
    finally:
        distillkit.unwrap(client)
        distiller.close()


def test_a_shadow_check_that_disagrees_blocks_its_answer_class_until_shown_right(
    sim: Simulator, tmp_path: Path
) -> None:
    distiller, client = trained_distiller(sim, tmp_path, holdout=0.0, explore_rate=0.0)  # no gate labels
    try:
        wrong_text = TEXTS["request_refund"][0]  # trained verbatim, and the student answers it wrongly
        first = ask(client, wrong_text)
        assert distillkit.route_info(first).routed  # type: ignore[union-attr]
        assert distiller.flush(10)  # the shadow check: a disagreement, a label
        second = ask(client, wrong_text)
        info = distillkit.route_info(second)
        assert info is not None and not info.routed and info.reason == "answer class last answered wrong"
        assert second.choices[0].message.content == canned("request_refund")  # the teacher answered
        right_text = TEXTS["card_arrival"][0]
        assert distillkit.route_info(ask(client, right_text)).routed  # type: ignore[union-attr]

        # The next model answers refunds right; exploration shows it, and the class routes again.
        sim.student_right()
        distiller.router.explore_rate = 1.0
        ask(client, wrong_text)  # refused, and explored: the student is asked in the background
        assert distiller.flush(10)
        third = ask(client, wrong_text)
        assert distillkit.route_info(third).routed  # type: ignore[union-attr]
    finally:
        distillkit.unwrap(client)
        distiller.close()


def test_a_new_model_is_judged_by_its_own_labels_not_its_predecessors(sim: Simulator, tmp_path: Path) -> None:
    distiller, client = trained_distiller(sim, tmp_path, holdout=0.0, explore_rate=0.0)  # no gate labels
    try:
        wrong_text = TEXTS["request_refund"][0]
        ask(client, wrong_text)  # routed, answered wrongly, shadow-checked: a disagreeing label
        assert distiller.flush(10)
        assert not distillkit.route_info(ask(client, wrong_text)).routed  # type: ignore[union-attr]
        assert any(not label.agreed for label in distiller.budget.labels("default"))

        sim.student_right()  # the next model answers refunds right
        for intent in INTENTS:
            for text in TEXTS[intent][12:14]:
                client.chat.completions.create(
                    model="gpt-4.1", messages=[{"role": "user", "content": text}], distillkit={"route": False}
                )
        assert distiller.flush(10)
        [round_] = distiller.train_now(wait=True, timeout=30)
        assert round_.status == "succeeded", round_
        assert distiller.budget.labels("default") == []  # the old model's labels went with it
        assert distiller.budget.acceptance("default") is None
        reply = ask(client, wrong_text)
        assert distillkit.route_info(reply).routed  # type: ignore[union-attr]
        assert reply.choices[0].message.content == canned("request_refund")
    finally:
        distillkit.unwrap(client)
        distiller.close()


@pytest.mark.parametrize("check", ["nearest", "neighbours"])
def test_the_cross_check_sends_an_answer_unlike_its_neighbours_to_the_teacher(
    sim: Simulator, tmp_path: Path, check: str
) -> None:
    distiller, client = trained_distiller(sim, tmp_path, holdout=0.0, explore_rate=0.0, cross_check=check)
    distiller.shadows.rate = 0.0
    try:
        wrong_text = TEXTS["request_refund"][0]  # trained verbatim; the student answers it wrongly
        students = len(sim.chat_requests()) - len(sim.chat_requests(model="gpt-4.1"))
        before = distiller.stats()["default"]
        reply = ask(client, wrong_text)
        info = distillkit.route_info(reply)
        assert info is not None and not info.routed
        assert info.reason == "student answer differs from its neighbours'"
        assert reply.choices[0].message.content == canned("request_refund")  # the teacher's answer
        assert len(sim.chat_requests()) - len(sim.chat_requests(model="gpt-4.1")) == students + 1  # asked first
        stats = distiller.stats()["default"]
        assert stats.cross_check_failures == 1 and stats.routed == 0 and stats.teacher == before.teacher + 1
        # An answer the neighbours gave is delivered as before.
        right = ask(client, TEXTS["card_arrival"][0])
        assert distillkit.route_info(right).routed  # type: ignore[union-attr]
        assert right.choices[0].message.content == canned("card_arrival")
        # Without the check the same request gets the student's wrong answer: the check did it.
        distiller.router.cross_check = None
        unchecked = ask(client, wrong_text)
        assert distillkit.route_info(unchecked).routed  # type: ignore[union-attr]
        assert unchecked.choices[0].message.content != canned("request_refund")
    finally:
        distillkit.unwrap(client)
        distiller.close()


def test_the_cross_check_leaves_answers_that_never_repeat_alone(tmp_path: Path) -> None:
    """Free text (every teacher answer different) gives nothing to compare: the student answers."""
    with Simulator(answer=lambda body: "About: " + body["messages"][-1]["content"], job_step_seconds=0.01) as sim:
        sim.student_wrong()
        distiller = Distiller(
            DistillConfig(path=str(tmp_path / "store"), min_examples=10, holdout=0.0, explore_rate=0.0),
            fine_tuning_provider=OpenAIFineTuningProvider(sim.client()),
        )
        assert distiller.config.cross_check == "nearest"  # the default
        client = distillkit.wrap(sim.client(), distiller)
        try:
            texts = [text for intent in INTENTS for text in TEXTS[intent][:3]]
            for text in texts:
                ask(client, text)
            [round_] = distiller.train_now(wait=True, timeout=30)
            assert round_.status == "succeeded", round_
            reply = ask(client, texts[0])
            info = distillkit.route_info(reply)
            assert info is not None and info.routed, info
            assert reply.choices[0].message.content != "About: " + texts[0]  # unchecked, as before
        finally:
            distillkit.unwrap(client)
            distiller.close()


def test_exploration_keeps_no_label_for_an_answer_the_cross_check_stops(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    distiller, client = trained_distiller(sim, tmp_path, holdout=0.0, explore_rate=1.0, cross_check="nearest")
    distiller.shadows.rate = 1.0
    try:
        for intent in INTENTS:
            for text in TEXTS[intent][:4]:  # trained verbatim: all would be routed
                ask(client, text)
                assert distiller.flush(10)
        stats = distiller.stats()["default"]
        assert stats.cross_check_failures == 8 and stats.routed == 16  # the two wrong intents' four each
        for intent in INTENTS:
            for text in TEXTS[intent][12:20]:  # paraphrases: the refused ones are explored on the student
                ask(client, text)
                assert distiller.flush(10)
        assert distiller.wait_shadows(10)
        labels = distiller.budget.labels("default")
        assert any(label.source == "explore" for label in labels), labels
        # Only answers that pass the check were compared: the student's wrong ones never are.
        assert all(label.agreed for label in labels), labels
        failures = distiller.stats()["default"].cross_check_failures
        assert failures >= 8
        distiller.close()  # publishes its counters; `distillkit status` shows what the check did
        monkeypatch.setenv("DISTILLKIT_PATH", str(tmp_path / "store"))
        out = io.StringIO()
        assert main(["status"], out=out) == 0
        assert f"cross-check: {failures} student answers unlike their neighbours' went to the teacher" in out.getvalue()
    finally:
        distillkit.unwrap(client)
        distiller.close()
