"""The promotion gate in training rounds: the simulator over HTTP serves the candidate, a real store."""

from __future__ import annotations

from typing import Any

from distillkit.routing.budget import Label
from distillkit.state import HOLDOUT_KIND
from distillkit.store import EdgeStore
from distillkit.streams import response_message
from distillkit.testing import Simulator
from distillkit.training import Trainer
from distillkit.training.evaluation import MIN_ROUTABLE_VERDICT

from .conftest import add_points, make_trainer, payloads


def gated(store: EdgeStore, sim: Simulator, labels: list[tuple[str, list[Label]]], **config: Any) -> Trainer:
    """A trainer whose candidates answer through the simulator, as the stored teacher did."""
    sim.student_answer = lambda body: body["messages"][-1]["content"].replace("question", "answer")
    client = sim.client(max_retries=0)
    trainer = make_trainer(store, sim, **config)
    trainer.student = lambda kwargs: response_message(client.chat.completions.create(**kwargs))[0]
    trainer.on_labels = lambda ns, new: labels.append((ns, new))
    return trainer


def test_a_candidate_that_answers_right_is_activated(sim: Simulator, store: EdgeStore) -> None:
    labels: list[tuple[str, list[Label]]] = []
    trainer = gated(store, sim, labels)
    ids = add_points(store, 20)

    [started] = trainer.tick()
    # A quarter held out (not the 10% share): enough labels to start certifying the namespace.
    assert started.status == "started" and started.held_out == 5 and started.examples == 15
    held = set(trainer.jobs()["ns"]["held_out"])
    assert len(held) == 5 and held < set(ids)
    sim.finish_jobs()
    [done] = trainer.wait([started], timeout=10)

    assert done.status == "succeeded" and done.model is not None
    assert done.evaluation is not None
    assert (done.evaluation["verdict"], done.evaluation["n"], done.evaluation["agreement"]) == ("promoted", 5, 1.0)
    assert [r["model"] for r in sim.chat_requests(model=done.model)] == [done.model] * 5  # it answered them
    points = payloads(store)
    assert {i for i, p in points.items() if p["indexed"]} == set(ids) - held  # held-out points are not flipped
    active = trainer.registry.get("ns")
    assert active is not None and active.model == done.model
    [(ns, measured)] = labels
    assert ns == "ns" and len(measured) == 5 and all(label.agreed and label.source == "gate" for label in measured)
    [entry] = trainer.history("ns")
    assert entry["status"] == "succeeded" and entry["evaluation"]["verdict"] == "promoted"

    # The held-out points train in the next round; they are not held out again.
    add_points(store, 20, start=20)
    [second] = trainer.tick()
    record = trainer.jobs()["ns"]
    assert held <= set(record["point_ids"]) and not held & set(record["held_out"])
    assert second.status == "started"


def test_the_verdict_counts_only_routable_points_when_there_are_enough_of_them(
    sim: Simulator, store: EdgeStore
) -> None:
    labels: list[tuple[str, list[Label]]] = []
    trainer = gated(store, sim, labels, threshold=0.0)  # every held-out point is routable
    add_points(store, 20)
    [started] = trainer.tick()
    sim.finish_jobs()
    [done] = trainer.wait([started], timeout=10)
    assert done.evaluation is not None
    assert (done.evaluation["scope"], done.evaluation["n"]) == ("all", 5)  # 5 routable: too few alone

    add_points(store, 300, start=20)
    [started] = trainer.tick()
    assert started.held_out >= MIN_ROUTABLE_VERDICT
    sim.finish_jobs()
    [done] = trainer.wait([started], timeout=10)
    assert done.evaluation is not None
    assert (done.evaluation["scope"], done.evaluation["n"]) == ("routable", started.held_out)


def test_a_candidate_that_answers_wrongly_is_not_activated(sim: Simulator, store: EdgeStore) -> None:
    labels: list[tuple[str, list[Label]]] = []
    trainer = gated(store, sim, labels)
    add_points(store, 30)
    sim.student_wrong()  # every fine-tuned model answers something else

    [started] = trainer.tick()
    sim.finish_jobs()
    [done] = trainer.wait([started], timeout=10)

    assert done.status == "rejected" and done.model is None
    assert done.evaluation is not None and done.evaluation["verdict"] == "rejected"
    assert done.evaluation["agreement"] == 0.0 and done.evaluation["n"] == 7
    assert done.reason is not None and "promotion gate" in done.reason
    assert store.count(namespace="ns", indexed=True) == 0  # nothing flipped
    assert trainer.registry.get("ns") is None and trainer.jobs() == {}
    assert labels == []  # a rejected candidate's answers say nothing about the active model
    [entry] = trainer.history("ns")
    assert entry["status"] == "rejected" and entry["outcome"] == "rejected" and entry["model"] is None
    assert entry["candidate"] and entry["evaluation"]["floor"] == 0.8

    # The next candidate answers right: it is activated, on every point (the held-out ones too).
    sim.student_right()
    [retry] = trainer.tick()
    sim.finish_jobs()
    [ok] = trainer.wait([retry], timeout=10)
    assert ok.status == "succeeded" and trainer.registry.get("ns") is not None
    assert store.count(namespace="ns", indexed=True) == 30 - ok.held_out


def test_an_active_model_stays_when_its_successor_is_rejected(sim: Simulator, store: EdgeStore) -> None:
    trainer = gated(store, sim, [])
    add_points(store, 20)
    [first] = trainer.wait(trainer.tick(), timeout=0.01)
    sim.finish_jobs()
    [first] = trainer.wait([first], timeout=10)
    assert first.status == "succeeded"

    add_points(store, 20, start=20)
    sim.student_wrong(model=None)
    [second] = trainer.tick()
    sim.finish_jobs()
    [second] = trainer.wait([second], timeout=10)
    assert second.status == "rejected"
    active = trainer.registry.get("ns")
    assert active is not None and active.model == first.model


def test_after_a_rejected_incremental_round_the_next_retrains_from_the_base(sim: Simulator, store: EdgeStore) -> None:
    trainer = gated(store, sim, [], training_mode="incremental")
    add_points(store, 20)
    [first] = trainer.tick()
    sim.finish_jobs()
    [first] = trainer.wait([first], timeout=10)
    add_points(store, 20, start=20)
    sim.student_wrong(model=None)
    [second] = trainer.tick()
    sim.finish_jobs()
    [second] = trainer.wait([second], timeout=10)
    assert first.status == "succeeded" and second.status == "rejected"
    assert second.base_model == first.model  # it continued the active adapter

    sim.student_right()
    [third] = trainer.tick()
    sim.finish_jobs()
    [third] = trainer.wait([third], timeout=10)
    assert third.status == "succeeded" and third.base_model == trainer.config.base_model  # from the base
    assert third.examples == 40 - third.held_out  # on every point, not only the new ones
    assert [entry["mode"] for entry in trainer.history("ns")] == ["incremental", "incremental", "full"]

    add_points(store, 20, start=40)  # the rounds after it continue from it again
    [fourth] = trainer.tick()
    sim.finish_jobs()
    [fourth] = trainer.wait([fourth], timeout=10)
    assert fourth.status == "succeeded" and fourth.base_model == third.model


def test_an_evaluation_that_fails_is_retried_then_rejected_never_activated(sim: Simulator, store: EdgeStore) -> None:
    trainer = gated(store, sim, [])
    add_points(store, 20)
    [started] = trainer.tick()
    sim.finish_jobs()
    model = sim.jobs[started.job_id]["fine_tuned_model"]
    sim.inject("chat", status=500, times=None, model=model)  # the candidate cannot be reached

    [first] = trainer.poll()
    assert first.status == "running" and first.reason is not None and "trying again" in first.reason
    [done] = trainer.wait([first], timeout=10)

    assert done.status == "rejected" and done.reason is not None and "could not evaluate" in done.reason
    assert store.count(namespace="ns", indexed=True) == 0 and trainer.registry.get("ns") is None


def test_a_round_too_small_to_hold_out_waits(sim: Simulator, store: EdgeStore) -> None:
    trainer = gated(store, sim, [])
    add_points(store, 11)  # 10 must be left to train on, 2 held out

    [skipped] = trainer.tick()

    assert skipped.status == "skipped" and skipped.reason is not None and "promotion gate" in skipped.reason
    assert sim.jobs == {} and store.get_record(HOLDOUT_KIND, "ns") is None
    add_points(store, 1, start=11)
    [started] = trainer.tick()
    assert started.status == "started" and (started.examples, started.held_out) == (10, 2)


def test_without_a_serving_path_or_with_holdout_zero_there_is_no_gate(sim: Simulator, store: EdgeStore) -> None:
    trainer = gated(store, sim, [], holdout=0.0)
    add_points(store, 12)
    [started] = trainer.tick()
    assert started.held_out == 0 and started.examples == 12
