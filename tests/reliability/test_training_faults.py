"""Fine-tuning jobs that end badly, end to end through a Distiller: nothing is flipped, no model is
activated, and the next round trains on the same points again.

A job that fails on its own and one hanging past ``job_timeout`` are covered for the Trainer in
tests/training/test_trainer.py; here: a job cancelled from outside, and the retry after a timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _support import ask

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.testing import Simulator
from distillkit.training import OpenAIFineTuningProvider

QUESTIONS = [
    "Where is my new card?",
    "How do I close my account?",
    "Why was I charged twice?",
    "Can I raise my overdraft limit?",
    "What is the fee for a transfer abroad?",
    "How do I reset my PIN?",
    "Is there a mortgage holiday?",
    "When is interest paid on savings?",
    "How do I report fraud?",
    "Can I freeze my card for a week?",
    "How long does a cheque take to clear?",
    "Can I get paper statements by post?",  # 12: 10 to train on, 2 held out for the promotion gate
]


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """Jobs that move quickly, so that a healthy job ends well within ``job_timeout``."""
    with Simulator(job_step_seconds=0.01) as sim:
        yield sim


@pytest.fixture
def trained_setup(simulator: Simulator, tmp_path: Any) -> Iterator[tuple[Distiller, Any]]:
    config = DistillConfig(path=str(tmp_path / "store"), min_examples=10, job_timeout=1.0)
    distiller = Distiller(config, fine_tuning_provider=OpenAIFineTuningProvider(simulator.client()))
    client = distillkit.wrap(simulator.client(), distiller)
    for text in QUESTIONS:
        ask(client, text)
    yield distiller, client
    distiller.close()


def assert_nothing_flipped(distiller: Distiller) -> None:
    assert distiller.store.count(namespace="default", indexed=True) == 0
    assert distiller.registry.get("default") is None
    assert distiller.trainer.jobs() == {}


def test_a_job_cancelled_from_outside_flips_nothing_and_the_next_round_retries(
    simulator: Simulator, trained_setup: tuple[Distiller, Any]
) -> None:
    distiller, _ = trained_setup
    simulator.hang_jobs = True
    [started] = distiller.train_now()
    assert started.status == "started" and started.job_id
    simulator.client().fine_tuning.jobs.cancel(started.job_id)  # someone cancels it in the dashboard

    [ended] = distiller.train_now(wait=True, timeout=10)
    assert ended.status == "cancelled" and ended.job_id == started.job_id
    assert_nothing_flipped(distiller)

    simulator.hang_jobs = False
    [retry] = distiller.train_now(wait=True, timeout=30)
    assert retry.status == "succeeded" and retry.job_id != started.job_id
    assert distiller.store.count(namespace="default", indexed=True) == len(QUESTIONS) - retry.held_out


def test_after_a_hanging_job_times_out_the_next_round_retries(
    simulator: Simulator, trained_setup: tuple[Distiller, Any]
) -> None:
    distiller, client = trained_setup
    simulator.hang_jobs = True
    [timed_out] = distiller.train_now(wait=True, timeout=10)
    assert timed_out.status == "failed" and "timed out" in (timed_out.reason or "")
    assert simulator.jobs[timed_out.job_id]["status"] == "cancelled"
    assert_nothing_flipped(distiller)
    assert ask(client, QUESTIONS[0]).model == "gpt-4.1"  # still the teacher

    simulator.hang_jobs = False
    [retry] = distiller.train_now(wait=True, timeout=30)
    assert retry.status == "succeeded" and retry.job_id != timed_out.job_id
    assert distiller.store.count(namespace="default", indexed=True) == len(QUESTIONS) - retry.held_out
