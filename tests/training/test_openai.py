"""OpenAI's dataset format and fine-tuning API, against the simulator over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from distillkit.testing import Simulator
from distillkit.training import OpenAIDatasetProvider, OpenAIFineTuningProvider

from .conftest import payload

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
