"""Training rounds against the simulator over HTTP and a real embedded store."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from distillkit.store import EdgeStore
from distillkit.testing import Simulator
from distillkit.training import OpenAIFineTuningProvider

from .conftest import add_points, make_trainer, payloads


def file_lines(sim: Simulator, job_id: str) -> list[dict]:
    content = sim.file_content(sim.jobs[job_id]["training_file"]).decode()
    return [json.loads(line) for line in content.splitlines()]


def test_success_flips_exactly_the_snapshotted_points(sim: Simulator, store: EdgeStore) -> None:
    trainer = make_trainer(store, sim)
    trained = add_points(store, 10)

    rounds = trainer.tick()
    assert [(r.namespace, r.status, r.examples) for r in rounds] == [("ns", "started", 10)]
    job_id = rounds[0].job_id
    assert job_id in sim.jobs
    assert sorted(trainer.jobs()["ns"]["point_ids"]) == sorted(trained)  # persisted before tick returned

    late = add_points(store, 3, start=10)  # captured while the job runs
    sim.finish_jobs()
    final = trainer.wait(rounds, timeout=5)

    model = final[0].model
    assert final[0].status == "succeeded" and final[0].job_id == job_id
    assert model is not None and model.startswith("ft:")
    points = payloads(store)
    for i in trained:
        assert points[i]["indexed"] is True
        assert points[i]["distilled_model"] == model
        assert points[i]["job_id"] == job_id
    for i in late:
        assert points[i]["indexed"] is False and points[i]["job_id"] is None
    assert store.count(namespace="ns", indexed=True) == 10
    assert len(file_lines(sim, job_id)) == 10
    active = trainer.registry.get("ns")
    assert active is not None and active.model == model and active.trained_count == 10 and active.job_id == job_id
    assert trainer.jobs() == {}
    [entry] = trainer.history("ns")
    assert entry["outcome"] == "succeeded" and entry["model"] == model and entry["points"] == 10


def test_a_failed_job_flips_nothing_and_the_next_round_retries(sim: Simulator, store: EdgeStore) -> None:
    trainer = make_trainer(store, sim)
    add_points(store, 10)
    sim.fail_jobs = True

    rounds = trainer.tick()
    sim.finish_jobs()
    [failed] = trainer.wait(rounds, timeout=5)

    assert failed.status == "failed" and failed.model is None
    assert failed.reason is not None and "simulated" in failed.reason
    assert store.count(namespace="ns", indexed=True) == 0
    assert trainer.registry.get("ns") is None
    assert trainer.jobs() == {}
    assert trainer.history("ns")[0]["outcome"] == "failed"

    sim.fail_jobs = False
    [retry] = trainer.tick()
    assert retry.status == "started" and retry.job_id != failed.job_id
    assert len(sim.jobs) == 2


def test_min_examples_is_respected(sim: Simulator, store: EdgeStore) -> None:
    trainer = make_trainer(store, sim)
    add_points(store, 9)

    [skipped] = trainer.tick()

    assert skipped.status == "skipped" and skipped.job_id is None
    assert skipped.reason == "9 new examples, 10 needed"
    assert sim.jobs == {} and sim.files == {}


def test_unusable_records_do_not_count_and_are_never_flipped(sim: Simulator, store: EdgeStore) -> None:
    trainer = make_trainer(store, sim)
    good = add_points(store, 10)
    [bad] = add_points(store, 1, start=99)
    store.set_payload([bad], {"response": {"role": "assistant", "content": ""}})

    [started] = trainer.tick()
    sim.finish_jobs()
    trainer.wait([started], timeout=5)

    assert started.examples == 10 and started.dropped == 1
    points = payloads(store)
    assert all(points[i]["indexed"] for i in good)
    assert points[bad]["indexed"] is False


def test_a_job_past_its_timeout_is_cancelled_and_nothing_flips(sim: Simulator, store: EdgeStore) -> None:
    sim.hang_jobs = True
    sim.job_step_seconds = 0.01
    trainer = make_trainer(store, sim, job_timeout=0.3)
    add_points(store, 10)

    rounds = trainer.tick()
    [final] = trainer.wait(rounds, timeout=5)

    assert final.status == "failed"
    assert final.reason is not None and "timed out" in final.reason
    job_id = rounds[0].job_id
    assert sim.jobs[job_id]["status"] == "cancelled"
    assert any(r.method == "POST" and r.path.endswith(f"/{job_id}/cancel") for r in sim.requests)
    assert store.count(namespace="ns", indexed=True) == 0
    assert trainer.jobs() == {}
    assert trainer.history("ns")[0]["outcome"] == "timed_out"


def test_incremental_training_continues_from_the_active_model(sim: Simulator, store: EdgeStore) -> None:
    trainer = make_trainer(store, sim, training_mode="incremental")
    add_points(store, 10)
    first = trainer.tick()
    sim.finish_jobs()
    [first_done] = trainer.wait(first, timeout=5)
    trainer.registry.set_threshold("ns", 0.8)  # a calibrated threshold survives the next model

    add_points(store, 10, start=10)
    [second] = trainer.tick()
    sim.finish_jobs()
    [second_done] = trainer.wait([second], timeout=5)

    assert first_done.model is not None and first_done.model.startswith("ft:")
    assert second.base_model == first_done.model
    assert sim.jobs[second.job_id]["model"] == first_done.model
    # The new points, and half as many of the first round's (replayed, so the adapter does not forget).
    questions = [line["messages"][1]["content"] for line in file_lines(sim, second.job_id)]
    assert sorted(questions[:10]) == sorted(f"question {i}" for i in range(10, 20))
    assert len(questions) == 15 and {int(q.split()[1]) for q in questions[10:]} < set(range(10))
    active = trainer.registry.get("ns")
    assert active is not None
    assert active.model == second_done.model != first_done.model
    assert active.trained_count == 20 and active.threshold == 0.8
    assert active.base_model == first_done.model


def test_incremental_training_without_replay_trains_on_the_new_points_only(sim: Simulator, store: EdgeStore) -> None:
    trainer = make_trainer(store, sim, training_mode="incremental", replay=0.0)
    add_points(store, 10)
    first = trainer.tick()
    sim.finish_jobs()
    trainer.wait(first, timeout=5)
    add_points(store, 12, start=10)
    [second] = trainer.tick()
    assert len(file_lines(sim, second.job_id)) == 12


def test_full_training_starts_from_the_base_model_with_all_points(sim: Simulator, store: EdgeStore) -> None:
    trainer = make_trainer(store, sim, training_mode="full", base_model="gpt-4.1-nano")
    add_points(store, 10)
    first = trainer.tick()
    sim.finish_jobs()
    trainer.wait(first, timeout=5)

    add_points(store, 10, start=10)
    [second] = trainer.tick()
    late = add_points(store, 2, start=20)
    sim.finish_jobs()
    [done] = trainer.wait([second], timeout=5)

    assert sim.jobs[second.job_id]["model"] == "gpt-4.1-nano"
    assert len(file_lines(sim, second.job_id)) == 20
    points = payloads(store)
    trained = [p for i, p in points.items() if i not in late]
    assert len(trained) == 20
    assert all(p["indexed"] and p["job_id"] == second.job_id and p["distilled_model"] == done.model for p in trained)
    assert all(not points[i]["indexed"] for i in late)
    active = trainer.registry.get("ns")
    assert active is not None and active.model == done.model and active.trained_count == 20


def test_a_failing_namespace_does_not_stop_the_others(
    sim: Simulator, store: EdgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    trainer = make_trainer(store, sim)
    add_points(store, 10, namespace="a")
    add_points(store, 10, namespace="b")
    sim.inject("files", status=500, times=1)  # the first upload (namespace "a") fails

    with caplog.at_level(logging.WARNING, logger="distillkit"):
        rounds = trainer.tick()

    assert [(r.namespace, r.status) for r in rounds] == [("a", "error"), ("b", "started")]
    assert rounds[0].reason is not None and "InternalServerError" in rounds[0].reason
    assert any("could not run a training round" in r.getMessage() for r in caplog.records)
    assert set(trainer.jobs()) == {"b"}
    assert store.count(namespace="a", indexed=True) == 0

    again = trainer.tick()
    assert [(r.namespace, r.status) for r in again] == [("a", "started"), ("b", "running")]
    assert len(sim.jobs) == 2


def test_a_round_in_flight_is_polled_not_duplicated(sim: Simulator, store: EdgeStore) -> None:
    trainer = make_trainer(store, sim)
    add_points(store, 10)
    [started] = trainer.tick()
    add_points(store, 10, start=10)  # enough for another job, but one is in flight

    [again] = trainer.tick()
    sim.tick()
    [third] = trainer.tick()

    assert again.status == "running" and again.job_id == started.job_id
    assert third.status == "running" and trainer.jobs()["ns"]["status"] == "queued"
    assert len(sim.jobs) == 1


def test_export_yields_training_examples_of_all_points(sim: Simulator, store: EdgeStore) -> None:
    trainer = make_trainer(store, sim)
    add_points(store, 3, namespace="a")
    add_points(store, 2, namespace="b")

    assert len(list(trainer.export())) == 5
    exported = list(trainer.export("b"))
    assert len(exported) == 2
    assert all(e["messages"][-1]["role"] == "assistant" for e in exported)


class _StopsAfterStarting(OpenAIFineTuningProvider):
    """The process stops right after the job was created, before its id is recorded."""

    def start(self, training_file: bytes, **kwargs: Any) -> str:
        super().start(training_file, **kwargs)
        raise SystemExit("the process stops here")


class _StopsAfterStartingBlind(_StopsAfterStarting):
    finds_jobs = False  # a provider that cannot look its jobs up


def _restarted(store: EdgeStore, sim: Simulator) -> Any:
    """The next process's trainer, once the dead one's start is older than the lease."""
    trainer = make_trainer(store, sim)
    trainer.LOCK_TTL_S = 0.5
    time.sleep(0.6)
    return trainer


def test_a_job_whose_starter_stopped_before_recording_it_is_adopted_not_orphaned(
    sim: Simulator, store: EdgeStore
) -> None:
    ids = add_points(store, 10)
    dying = make_trainer(store, sim)
    dying.fine_tuning_provider = _StopsAfterStarting(sim.client())
    with pytest.raises(SystemExit):
        dying.tick()
    [paid] = sim.jobs  # the job exists, and is paid for

    [adopted] = _restarted(store, sim).tick()

    assert adopted.status == "started" and adopted.job_id == paid
    assert {r["job_id"] for r in make_trainer(store, sim).jobs().values()} == set(sim.jobs)
    sim.finish_jobs()
    [done] = make_trainer(store, sim).tick()
    assert done.status == "succeeded" and done.job_id == paid and len(sim.jobs) == 1
    assert all(payloads(store)[i]["indexed"] for i in ids)


def test_a_start_that_cannot_be_looked_up_is_dropped_with_a_warning_and_retried(
    sim: Simulator, store: EdgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    add_points(store, 10)
    dying = make_trainer(store, sim)
    dying.fine_tuning_provider = _StopsAfterStartingBlind(sim.client())
    with pytest.raises(SystemExit):
        dying.tick()
    trainer = _restarted(store, sim)

    with caplog.at_level(logging.WARNING, logger="distillkit"):
        [dropped] = trainer.tick()
    [retried] = trainer.tick()

    assert dropped.status == "failed" and "cannot look jobs up" in (dropped.reason or "")
    assert "not tracked" in caplog.text
    assert retried.status == "started" and trainer.jobs()["ns"]["job_id"] == retried.job_id


def test_a_start_in_progress_is_left_alone_until_its_lease_would_have_lapsed(sim: Simulator, store: EdgeStore) -> None:
    add_points(store, 10)
    dying = make_trainer(store, sim)
    dying.fine_tuning_provider = _StopsAfterStarting(sim.client())
    with pytest.raises(SystemExit):
        dying.tick()

    [waiting] = make_trainer(store, sim).tick()  # default lease: the starter may still be at it

    assert waiting.status == "skipped" and len(sim.jobs) == 1
    assert make_trainer(store, sim).jobs()["ns"]["status"] == "starting"
