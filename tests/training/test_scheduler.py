"""The scheduler thread: runs rounds repeatedly, survives failing ones, stops cleanly."""

from __future__ import annotations

import threading
import time

import pytest
import schedule

from distillkit import ConfigError
from distillkit.training import TrainingScheduler


def wait_for(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_runs_the_job_repeatedly_and_stops_cleanly() -> None:
    calls: list[float] = []
    scheduler = TrainingScheduler(lambda: calls.append(time.monotonic()), every_s=0.05)

    scheduler.start()
    scheduler.start()  # idempotent: still one thread
    assert scheduler.running
    assert wait_for(lambda: len(calls) >= 3)
    names = [t.name for t in threading.enumerate()]
    assert names.count("distillkit-training") == 1

    started = time.monotonic()
    scheduler.stop(timeout=5)
    assert time.monotonic() - started < 1.0  # woken at once, not after a sleep
    assert not scheduler.running
    assert "distillkit-training" not in [t.name for t in threading.enumerate()]
    count = len(calls)
    time.sleep(0.15)
    assert len(calls) == count
    scheduler.stop()  # idempotent
    assert schedule.jobs == []  # the module-level scheduler, which belongs to the program, is untouched


def test_a_failing_job_is_logged_and_does_not_kill_the_thread(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def failing() -> None:
        calls.append(1)
        raise RuntimeError("provider down")

    scheduler = TrainingScheduler(failing, every_s=0.05)
    scheduler.start()
    try:
        assert wait_for(lambda: len(calls) >= 3)
        assert scheduler.running
    finally:
        scheduler.stop(timeout=5)
    assert any("provider down" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_can_be_started_again_after_stop() -> None:
    calls: list[int] = []
    scheduler = TrainingScheduler(lambda: calls.append(1), every_s=0.05)
    scheduler.start()
    scheduler.stop(timeout=5)
    count = len(calls)

    scheduler.start()
    try:
        assert wait_for(lambda: len(calls) > count)
    finally:
        scheduler.stop(timeout=5)


def test_an_interval_that_cannot_be_scheduled_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="DISTILLKIT_TRAIN_EVERY"):
        TrainingScheduler(lambda: None, every_s=0)
