"""OpenAI's dataset format and fine-tuning API, against the simulator over HTTP."""

from __future__ import annotations

import json
import logging
from typing import Any

import openai
import pytest

from distillkit.store import EdgeStore
from distillkit.testing import Simulator
from distillkit.testing.simulator.fine_tuning import FINE_TUNING_REFUSAL
from distillkit.training import OpenAIDatasetProvider, OpenAIFineTuningProvider

from .conftest import add_points, make_trainer, payload, payloads

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def tool_record(i: int) -> dict[str, Any]:
    record = payload(i)
    record["messages"] = [
        {"role": "developer", "content": "Use the tools."},
        {"role": "user", "content": f"weather in city {i}?"},
    ]
    record["params"] = {"model": "gpt-4.1", "tools": TOOLS, "tool_choice": "auto", "parallel_tool_calls": False}
    record["response"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "x"}'}}
        ],
    }
    return record


def test_example_keeps_instructions_and_ends_with_the_teacher_answer() -> None:
    example = OpenAIDatasetProvider().example(payload(1))

    assert example == {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "question 1"},
            {"role": "assistant", "content": "answer 1"},
        ]
    }


def test_tool_calls_and_tools_are_included() -> None:
    example = OpenAIDatasetProvider().example(tool_record(3))

    assert example["messages"][0] == {"role": "system", "content": "Use the tools."}  # developer → system
    assert example["messages"][-1] == {
        "role": "assistant",
        "tool_calls": [
            {"type": "function", "id": "call_3", "function": {"name": "get_weather", "arguments": '{"city": "x"}'}}
        ],
    }
    assert example["tools"] == TOOLS
    assert example["parallel_tool_calls"] is False
    assert "tool_choice" not in example  # not part of the training format


def test_earlier_turns_lose_keys_the_training_format_rejects() -> None:
    record = payload(1)
    record["messages"] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "refusal": None, "annotations": []},
        {"role": "user", "content": "question 1"},
    ]

    example = OpenAIDatasetProvider().example(record)

    assert example["messages"][1] == {"role": "assistant", "content": "hello"}


def test_unusable_records_are_dropped_and_counted() -> None:
    good = [payload(i) for i in range(3)]
    bad = [
        payload(10, response={"role": "assistant", "content": None}),
        payload(11, response={"role": "assistant", "content": ""}),
        payload(12, response={"role": "assistant", "content": None, "refusal": "I can't help with that."}),
        payload(13, messages=[]),
        payload(14, messages=[{"content": "no role"}]),
        payload(15, response=None),
    ]
    records = [good[0], *bad[:3], good[1], *bad[3:], good[2]]

    dataset = OpenAIDatasetProvider().build(records)

    assert len(dataset.examples) == 3
    assert dataset.kept == [0, 4, 8]
    assert dataset.dropped == 6
    assert dataset.drop_reasons == {
        "empty response": 2,
        "refusal": 1,
        "no messages": 1,
        "malformed messages": 1,
        "no response": 1,
    }
    lines = dataset.data.decode().splitlines()
    assert [json.loads(line) for line in lines] == dataset.examples


def test_the_simulator_accepts_the_file_and_the_job_succeeds(sim: Simulator) -> None:
    records = [payload(i) for i in range(6)] + [tool_record(i) for i in range(6)]
    dataset = OpenAIDatasetProvider().build(records)
    provider = OpenAIFineTuningProvider(sim.client())

    job_id = provider.start(dataset.data, base_model="gpt-4.1-nano", namespace="support", suffix="support")
    assert provider.poll(job_id).status == "validating_files"
    sim.finish_jobs()
    status = provider.poll(job_id)

    assert status.done and status.succeeded
    assert status.model is not None and status.model.startswith("ft:gpt-4.1-nano:")
    assert status.trained_tokens and status.trained_tokens > 0
    assert status.progress  # the latest event's message
    job = sim.jobs[job_id]
    assert sim.file_content(job["training_file"]) == dataset.data
    assert sim.files[job["training_file"]]["purpose"] == "fine-tune"
    assert job["metadata"] == {"distillkit_namespace": "support"}


def test_poll_reports_a_failure_and_cancel_reaches_the_api(sim: Simulator) -> None:
    data = OpenAIDatasetProvider().build([payload(i) for i in range(10)]).data
    provider = OpenAIFineTuningProvider(sim.client())
    failing = provider.start(data, base_model="gpt-4.1-nano", namespace="ns")
    cancelled = provider.start(data, base_model="gpt-4.1-nano", namespace="ns")

    sim.fail_job(failing, "out of GPUs")
    provider.cancel(cancelled)

    status = provider.poll(failing)
    assert status.status == "failed" and status.done and not status.succeeded
    assert status.error == "server_error: out of GPUs"
    assert provider.poll(cancelled).status == "cancelled"


def test_client_is_built_lazily_from_the_environment(monkeypatch: pytest.MonkeyPatch, sim: Simulator) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-simulator")
    provider = OpenAIFineTuningProvider()
    assert provider._client is None  # nothing built on construction

    data = OpenAIDatasetProvider().build([payload(i) for i in range(10)]).data
    job_id = provider.start(data, base_model="gpt-4.1-nano", namespace="ns")

    assert job_id in sim.jobs


def test_a_refusal_to_fine_tune_is_one_clear_error_then_a_pause_not_a_retry_loop(
    sim: Simulator, store: EdgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenAI shuts an organisation out of fine-tuning (everyone from 2027-01-06)."""
    add_points(store, 12)
    sim.refuse_fine_tuning = FINE_TUNING_REFUSAL
    trainer = make_trainer(store, sim)

    with caplog.at_level(logging.ERROR, logger="distillkit"):
        [first] = trainer.tick()

    assert first.status == "error" and "fine-tuning unavailable" in (first.reason or "")
    [logged] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    message = logged.getMessage()
    assert "refused to create a fine-tuning job" in message and "DISTILLKIT_FINE_TUNING=lora" in message
    assert "smollm2-135m" in message and "distillkit[local]" in message and "2027-01-06" in message
    # Nothing started, nothing flipped; the uploaded file was removed.
    assert sim.jobs == {} and not sim.files
    assert all(p["indexed"] is False for p in payloads(store).values())
    creates = [r for r in sim.requests if r.method == "POST" and r.path.endswith("/fine_tuning/jobs")]
    assert len(creates) == 1

    # The next rounds do not run into the same wall: the namespace is paused, and says so.
    caplog.clear()
    for _ in range(3):
        [again] = trainer.tick()
        assert again.status == "skipped" and "paused until" in (again.reason or "")
    creates = [r for r in sim.requests if r.method == "POST" and r.path.endswith("/fine_tuning/jobs")]
    assert len(creates) == 1 and not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_bad_request_about_one_job_is_not_taken_for_a_shutdown(sim: Simulator) -> None:
    provider = OpenAIFineTuningProvider(sim.client())
    training_file = OpenAIDatasetProvider().build([payload(i) for i in range(12)]).data
    with pytest.raises(openai.BadRequestError):  # an unknown fine-tuned model: this job's problem
        provider.start(training_file, base_model="ft:gpt-4.1-mini:org::nope", namespace="ns")
