"""Tests of the OpenAI-compatible Simulator, driven by the real openai SDK over HTTP (no mocks)."""

from __future__ import annotations

import importlib.metadata
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageToolCall
from openai.types.fine_tuning import FineTuningJob

from distillkit.testing import LoggedRequest, Reply, Simulator, default_answer

pytest_plugins = ["pytester"]

USER = [{"role": "user", "content": "What is the capital of France?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]


def _example(i: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": f"answer {i}"},
        ]
    }


GOOD_JSONL = "".join(json.dumps(_example(i)) + "\n" for i in range(12)).encode()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator() as simulator:
        yield simulator


@pytest.fixture
def client(sim: Simulator) -> Iterator[openai.OpenAI]:
    c = sim.client()
    yield c
    c.close()


def _upload(client: openai.OpenAI, content: bytes = GOOD_JSONL, name: str = "train.jsonl") -> str:
    return client.files.create(file=(name, content), purpose="fine-tune").id


# ------------------------------------------------------------------ lifecycle


def test_start_stop_and_base_url() -> None:
    sim = Simulator()
    with pytest.raises(RuntimeError):
        _ = sim.base_url
    sim.start()
    try:
        assert sim.base_url == f"http://127.0.0.1:{sim.port}/v1"
        assert sim.start() is sim  # idempotent
    finally:
        sim.stop()
    sim.stop()  # idempotent


# ------------------------------------------------------------------ chat


def test_plain_completion(sim: Simulator, client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "gpt-4.1-mini"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "Answer: What is the capital of France?"
    assert r.choices[0].message.refusal is None
    assert r.choices[0].finish_reason == "stop"
    assert r.system_fingerprint
    assert r.usage is not None
    assert r.usage.prompt_tokens == 7  # 6 words + 1 per message
    assert r.usage.completion_tokens == 7
    assert r.usage.total_tokens == 14
    again = client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    assert again.choices[0].message.content == r.choices[0].message.content


def test_custom_answer_functions_and_reply(sim: Simulator, client: openai.OpenAI) -> None:
    sim.answer = lambda req: f"teacher says {len(req['messages'])}"
    sim.student_answer = lambda req: Reply(content="student", finish_reason="length")
    sim.add_model("ft:gpt-4.1-mini:acme::abc")
    t = client.chat.completions.create(model="gpt-4.1", messages=USER)
    s = client.chat.completions.create(model="ft:gpt-4.1-mini:acme::abc", messages=USER)
    assert t.choices[0].message.content == "teacher says 1"
    assert (s.choices[0].message.content, s.choices[0].finish_reason) == ("student", "length")
    assert s.model == "ft:gpt-4.1-mini:acme::abc"


def test_student_models_can_be_made_wrong_for_chosen_requests(sim: Simulator, client: openai.OpenAI) -> None:
    sim.add_model("ft:a")
    sim.add_model("ft:b")

    def ask(model: str, text: str) -> str | None:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
        return reply.choices[0].message.content

    right = {text: ask("gpt-4.1", text) for text in ("refund please", "hello there")}
    sim.student_wrong(lambda body: "refund" in body["messages"][-1]["content"], model="ft:a")
    assert ask("ft:a", "refund please") != right["refund please"]
    assert ask("ft:a", "refund please") == ask("ft:a", "refund please")  # deterministic
    assert ask("ft:a", "hello there") == right["hello there"]
    assert ask("ft:b", "refund please") == right["refund please"]  # another model is right
    assert ask("gpt-4.1", "refund please") == right["refund please"]  # the teacher never is wrong

    sim.student_right()
    sim.student_wrong(rate=0.3)
    texts = [f"question number {i}" for i in range(200)]
    wrong = sum(ask("ft:b", t) != ask("gpt-4.1", t) for t in texts)
    assert 40 <= wrong <= 80  # about 30 % of distinct conversations
    sim.student_right()
    assert all(ask("ft:b", t) == ask("gpt-4.1", t) for t in texts[:20])

    tools_call = client.chat.completions.create(model="ft:b", messages=USER, tools=TOOLS, tool_choice="required")
    sim.student_wrong()
    wrong_call = client.chat.completions.create(model="ft:b", messages=USER, tools=TOOLS, tool_choice="required")
    assert tools_call.choices[0].message.tool_calls and wrong_call.choices[0].message.tool_calls
    assert tools_call.choices[0].message.tool_calls[0].function.arguments != (
        wrong_call.choices[0].message.tool_calls[0].function.arguments
    )


def test_validation_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gpt-4.1", messages=[])
    assert exc.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4.1", messages=[{"content": "no role"}])  # type: ignore[list-item]


def test_validation_errors_raw_http(sim: Simulator) -> None:
    for body in ({"model": "gpt-4.1"}, {"messages": USER}, {"model": "gpt-4.1", "messages": ["x"]}):
        r = httpx.post(f"{sim.base_url}/chat/completions", json=body)
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-request-id"]
    bad = httpx.post(
        f"{sim.base_url}/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400
    unknown = httpx.get(f"{sim.base_url}/nope")
    assert unknown.status_code == 404
    assert set(unknown.json()["error"]) == {"message", "type", "param", "code"}


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4.1-mini", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(isinstance(c, ChatCompletionChunk) and c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Answer: What is the capital of France?"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 5
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 14


def test_streaming_without_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4.1", messages=USER, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_tool_calls(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4.1", messages=USER, tools=TOOLS)  # type: ignore[arg-type]
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert msg.content is None
    assert msg.tool_calls is not None
    call = msg.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageToolCall)
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {}
    assert call.id.startswith("call_")
    named = client.chat.completions.create(
        model="gpt-4.1",
        messages=USER,
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"  # type: ignore[index,union-attr]
    none = client.chat.completions.create(model="gpt-4.1", messages=USER, tools=TOOLS, tool_choice="none")  # type: ignore[arg-type]
    assert none.choices[0].message.tool_calls is None
    # After a tool result, "auto" answers in text so agent loops end.
    follow_up = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    done = client.chat.completions.create(model="gpt-4.1", messages=follow_up, tools=TOOLS)  # type: ignore[arg-type]
    assert done.choices[0].message.content


def test_tool_calls_streamed_and_custom(sim: Simulator, client: openai.OpenAI) -> None:
    sim.answer = lambda req: Reply(
        tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Paris, France"}}}]
    )
    plain = client.chat.completions.create(model="gpt-4.1", messages=USER)
    chunks = list(client.chat.completions.create(model="gpt-4.1", messages=USER, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    heads = [d.tool_calls[0] for d in deltas if d.tool_calls and d.tool_calls[0].id]
    assert len(heads) == 1 and heads[0].function.name == "get_weather" and heads[0].type == "function"  # type: ignore[union-attr]
    arguments = "".join(
        d.tool_calls[0].function.arguments or ""  # type: ignore[union-attr]
        for d in deltas
        if d.tool_calls
    )
    pieces = sum(1 for d in deltas if d.tool_calls and not d.tool_calls[0].id)
    assert pieces > 1
    assert json.loads(arguments) == {"city": "Paris, France"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert heads[0].id == plain.choices[0].message.tool_calls[0].id  # type: ignore[index]  # deterministic


def test_json_modes(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4.1", messages=USER, response_format={"type": "json_object"})
    assert json.loads(r.choices[0].message.content or "") == {"answer": "What is the capital of France?"}
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    r = client.chat.completions.create(
        model="gpt-4.1",
        messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    assert set(json.loads(r.choices[0].message.content or "")) == {"city", "population"}


def test_default_answer_is_pure() -> None:
    assert default_answer({"messages": USER}).content == "Answer: What is the capital of France?"


# ------------------------------------------------------------------ embeddings


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    texts = ["the cat sat", "the cat sat down", "quantum chromodynamics"]
    floats = client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    default = client.embeddings.create(model="text-embedding-3-small", input=texts)  # base64 on the wire
    assert floats.object == "list" and floats.model == "text-embedding-3-small"
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert floats.usage.prompt_tokens == 3 + 4 + 2
    vectors = [d.embedding for d in floats.data]
    assert all(len(v) == 64 for v in vectors)
    assert all(abs(sum(x * x for x in v) - 1) < 1e-6 for v in vectors)
    for a, b in zip(vectors, (d.embedding for d in default.data), strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-6  # float32 round trip

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    single = client.embeddings.create(model="m", input="the cat sat", dimensions=16, encoding_format="float")
    assert len(single.data[0].embedding) == 16
    assert client.embeddings.create(model="m", input="the cat sat").data[0].embedding == default.data[0].embedding


def test_embeddings_reject_token_arrays(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="m", input=[[1, 2, 3]])


# ------------------------------------------------------------------ files and fine-tuning


def test_files(sim: Simulator, client: openai.OpenAI) -> None:
    f = client.files.create(file=("train.jsonl", GOOD_JSONL), purpose="fine-tune")
    assert f.id.startswith("file-") and f.object == "file"
    assert (f.bytes, f.filename, f.purpose, f.status) == (
        len(GOOD_JSONL),
        "train.jsonl",
        "fine-tune",
        "processed",
    )
    assert client.files.retrieve(f.id).id == f.id
    assert client.files.content(f.id).read() == GOOD_JSONL
    assert [x.id for x in client.files.list()] == [f.id]
    assert sim.requests[0].body == {"purpose": "fine-tune", "filename": "train.jsonl"}
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b"{}"), purpose="assistants")
    assert client.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_fine_tuning_lifecycle_with_tick(sim: Simulator, client: openai.OpenAI) -> None:
    file_id = _upload(client)
    job = client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4.1-mini-2025-04-14", suffix="demo")
    assert isinstance(job, FineTuningJob)
    assert job.status == "validating_files" and job.fine_tuned_model is None
    statuses = []
    for _ in range(3):
        sim.tick()
        statuses.append(client.fine_tuning.jobs.retrieve(job.id).status)
    assert statuses == ["queued", "running", "succeeded"]
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.fine_tuned_model == f"ft:gpt-4.1-mini-2025-04-14:distillkit:demo:{job.id[-8:]}"
    assert done.trained_tokens and done.finished_at and done.error is None
    assert done.hyperparameters.n_epochs == 3
    assert sim.jobs[job.id]["status"] == "succeeded"
    events = client.fine_tuning.jobs.list_events(job.id)
    assert events.data[0].message == "The job has successfully completed"  # newest first
    assert all(e.object == "fine_tuning.job.event" for e in events.data)
    page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    rest = client.fine_tuning.jobs.list_events(job.id, after=page.data[-1].id)
    assert [e.id for e in page.data + rest.data] == [e.id for e in events.data]
    sim.tick()  # terminal jobs stay put
    assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"


def test_fine_tuned_model_served_only_after_success(sim: Simulator, client: openai.OpenAI) -> None:
    job = client.fine_tuning.jobs.create(training_file=_upload(client), model="gpt-4o-mini-2024-07-18")
    expected = f"ft:gpt-4o-mini-2024-07-18:distillkit::{job.id[-8:]}"
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model=expected, messages=USER)
    assert exc.value.code == "model_not_found"
    assert exc.value.body["message"] == f"The model `{expected}` does not exist or you do not have access to it."  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(expected)
    sim.finish_jobs()
    r = client.chat.completions.create(model=expected, messages=USER)
    assert r.model == expected
    assert r.choices[0].message.content == "Answer: What is the capital of France?"  # learned the teacher
    assert client.models.retrieve(expected).id == expected
    # Fine-tuning a fine-tune keeps the root base model in the new name.
    job2 = client.fine_tuning.jobs.create(training_file=_upload(client), model=expected)
    sim.finish_jobs()
    assert sim.jobs[job2.id]["fine_tuned_model"] == f"ft:gpt-4o-mini-2024-07-18:distillkit::{job2.id[-8:]}"


def test_fine_tuning_by_time() -> None:
    with Simulator(job_step_seconds=0.05) as sim, sim.client() as client:
        job = client.fine_tuning.jobs.create(training_file=_upload(client), model="gpt-4.1-mini")
        deadline = time.monotonic() + 5
        seen = {job.status}
        while (status := client.fine_tuning.jobs.retrieve(job.id).status) != "succeeded":
            seen.add(status)
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert "validating_files" in seen
        assert client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"".join(json.dumps(_example(i)).encode() + b"\n" for i in range(3)), "at least 10"),
        (GOOD_JSONL + b"not json\n", "Line 13"),
        (GOOD_JSONL + json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), "Line 13"),
        (GOOD_JSONL + b'{"messages": [{"content": "x"}]}\n', "Line 13"),
    ],
)
def test_invalid_training_file(sim: Simulator, client: openai.OpenAI, content: bytes, needle: str) -> None:
    job = client.fine_tuning.jobs.create(training_file=_upload(client, content), model="gpt-4.1-mini")
    sim.tick()
    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.code == "invalid_training_file" and failed.error.param == "training_file"
    assert needle in failed.error.message
    assert failed.fine_tuned_model is None


def test_unknown_training_file(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(training_file="file-nope", model="gpt-4.1-mini")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")


def test_cancel_fail_and_hang(sim: Simulator, client: openai.OpenAI) -> None:
    file_id = _upload(client)
    job = client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4.1-mini")
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)
    sim.fail_jobs = True
    failing = client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4.1-mini")
    sim.finish_jobs()
    result = client.fine_tuning.jobs.retrieve(failing.id)
    assert result.status == "failed" and result.error and result.error.code == "server_error"
    sim.fail_jobs = False
    sim.hang_jobs = True
    hung = client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4.1-mini")
    sim.finish_jobs()
    sim.tick()
    assert client.fine_tuning.jobs.retrieve(hung.id).status == "running"
    sim.fail_job(hung.id)
    assert client.fine_tuning.jobs.retrieve(hung.id).status == "failed"
    with pytest.raises(ValueError):
        sim.fail_job(hung.id)


def test_fail_jobs_constructor_flag() -> None:
    with Simulator(fail_jobs=True) as sim, sim.client() as client:
        job = client.fine_tuning.jobs.create(training_file=_upload(client), model="gpt-4.1-mini")
        sim.finish_jobs()
        assert sim.jobs[job.id]["status"] == "failed"


def test_jobs_list_pagination(client: openai.OpenAI) -> None:
    file_id = _upload(client)
    ids = [client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4.1-mini").id for _ in range(5)]
    first = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == ids[::-1][:2] and first.has_more
    second = client.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
    assert [j.id for j in second.data] == ids[::-1][2:4]
    everything = [j.id for j in client.fine_tuning.jobs.list(limit=2)]  # auto-pagination
    assert everything == ids[::-1]


# ------------------------------------------------------------------ models and LoRA


def test_models(sim: Simulator, client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini-2024-07-18"} <= ids
    assert client.models.retrieve("gpt-4.1").id == "gpt-4.1"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    sim.add_model("my-student")
    assert "my-student" in {m.id for m in client.models.list()}


def _adapter(folder: Path) -> str:
    """A folder that looks like a saved adapter to the simulator (as to vLLM: adapter_config.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    return str(folder)


def test_lora_load_unload(sim: Simulator, client: openai.OpenAI, tmp_path: Path) -> None:
    url = sim.base_url
    path = _adapter(tmp_path / "a")
    r = httpx.post(f"{url}/load_lora_adapter", json={"lora_name": "student-v1", "lora_path": path})
    assert r.status_code == 200
    assert r.text == "Success: LoRA adapter 'student-v1' added successfully."
    assert sim.lora_adapters == {"student-v1": path}
    again = httpx.post(f"{url}/load_lora_adapter", json={"lora_name": "student-v1", "lora_path": path})
    assert again.status_code == 400
    sim.student_answer = lambda req: "from the adapter"
    reply = client.chat.completions.create(model="student-v1", messages=USER)
    assert (reply.model, reply.choices[0].message.content) == ("student-v1", "from the adapter")
    assert "student-v1" in {m.id for m in client.models.list()}
    assert httpx.post(f"{url}/unload_lora_adapter", json={"lora_name": "student-v1"}).status_code == 200
    assert httpx.post(f"{url}/unload_lora_adapter", json={"lora_name": "student-v1"}).status_code == 404
    assert sim.lora_adapters == {}


def test_lora_path_without_an_adapter_is_refused(sim: Simulator, tmp_path: Path) -> None:
    r = httpx.post(f"{sim.base_url}/load_lora_adapter", json={"lora_name": "x", "lora_path": str(tmp_path)})
    assert r.status_code == 400 and "No adapter found" in r.text
    assert sim.lora_adapters == {}


def test_lora_via_sdk_post(sim: Simulator, client: openai.OpenAI, tmp_path: Path) -> None:
    path = _adapter(tmp_path / "p")
    text = client.post("/load_lora_adapter", body={"lora_name": "x", "lora_path": path}, cast_to=str)
    assert "added successfully" in text
    assert "x" in sim.lora_adapters


# ------------------------------------------------------------------ faults


def test_fault_rate_limit(sim: Simulator, client: openai.OpenAI) -> None:
    sim.inject("chat", status=429)
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="gpt-4.1", messages=USER)
    assert exc.value.code == "rate_limit_exceeded"
    assert exc.value.response.headers["retry-after-ms"] == "10"
    assert client.chat.completions.create(model="gpt-4.1", messages=USER).choices[0].message.content
    assert [r.status for r in sim.requests] == [429, 200]


def test_fault_retried_by_sdk(sim: Simulator) -> None:
    sim.inject("chat", status=429, times=2)
    with sim.client(max_retries=2) as retrying:
        r = retrying.chat.completions.create(model="gpt-4.1", messages=USER)
    assert r.choices[0].message.content
    assert [x.status for x in sim.requests] == [429, 429, 200]
    assert len(sim.chat_requests()) == 3


def test_fault_server_errors_and_unlimited(sim: Simulator, client: openai.OpenAI) -> None:
    fault = sim.inject("*", status=500, times=None)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4.1", messages=USER)
    with pytest.raises(openai.InternalServerError):
        client.models.list()
    assert fault.hits == 3
    sim.clear_faults()
    sim.inject("embeddings", status=503, headers={"x-should-retry": "false"})
    with pytest.raises(openai.InternalServerError) as exc:
        client.embeddings.create(model="m", input="x")
    assert exc.value.status_code == 503
    assert client.models.list().data


def test_fault_drop(sim: Simulator, client: openai.OpenAI) -> None:
    sim.inject("chat", drop=True)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4.1", messages=USER)
    assert sim.requests[0].status is None
    assert client.chat.completions.create(model="gpt-4.1", messages=USER).choices[0].message.content


@pytest.mark.parametrize("mode", ["error", "drop"])
def test_fault_mid_stream(sim: Simulator, client: openai.OpenAI, mode: str) -> None:
    sim.inject("chat", mid_stream=mode)  # type: ignore[arg-type]
    client.chat.completions.create(model="gpt-4.1", messages=USER)  # non-streaming requests are unaffected
    received = []
    error = openai.APIError if mode == "error" else openai.APIConnectionError
    with pytest.raises(error):
        for chunk in client.chat.completions.create(model="gpt-4.1", messages=USER, stream=True):
            received.append(chunk)
    assert len(received) == 3  # role chunk + two content chunks
    assert len(list(client.chat.completions.create(model="gpt-4.1", messages=USER, stream=True))) > 3


def test_fault_restricted_to_model(sim: Simulator, client: openai.OpenAI) -> None:
    sim.add_model("ft:gpt-4.1-mini:distillkit::student")
    sim.inject("chat", status=500, model="ft:gpt-4.1-mini:distillkit::student", times=None)
    assert client.chat.completions.create(model="gpt-4.1", messages=USER).model == "gpt-4.1"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="ft:gpt-4.1-mini:distillkit::student", messages=USER)
    assert len(sim.chat_requests(model="ft:gpt-4.1-mini:distillkit::student")) == 1
    assert len(sim.chat_requests(model="gpt-4.1")) == 1


def test_fault_latency(sim: Simulator, client: openai.OpenAI) -> None:
    sim.inject("embeddings", latency=0.2)
    start = time.perf_counter()
    client.embeddings.create(model="m", input="x")
    assert time.perf_counter() - start >= 0.2
    start = time.perf_counter()
    client.embeddings.create(model="m", input="x")
    assert time.perf_counter() - start < 0.2


def test_fault_custom_body(sim: Simulator) -> None:
    sim.inject("models", body="not json at all")
    r = httpx.get(f"{sim.base_url}/models")
    assert (r.status_code, r.text) == (200, "not json at all")


def test_inject_rejects_bad_arguments(sim: Simulator) -> None:
    with pytest.raises(ValueError):
        sim.inject("chatz", status=500)
    with pytest.raises(ValueError):
        sim.inject("chat", mid_stream="boom")  # type: ignore[arg-type]


# ------------------------------------------------------------------ request log


def test_request_log(sim: Simulator, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4.1", messages=USER, temperature=0)
    client.models.list()
    httpx.get(f"{sim.base_url}/models?limit=3&after=x")
    log = sim.requests
    assert all(isinstance(r, LoggedRequest) for r in log)
    chat = log[0]
    assert (chat.method, chat.path, chat.status) == ("POST", "/v1/chat/completions", 200)
    assert chat.body["temperature"] == 0 and chat.body["messages"] == USER
    assert chat.headers["authorization"] == "Bearer sk-simulator"
    assert chat.time <= time.time()
    assert (log[2].path, log[2].query) == ("/v1/models", {"limit": "3", "after": "x"})
    assert log[1].body is None
    assert sim.chat_requests() == [chat.body]
    sim.reset_log()
    assert sim.requests == []


# ------------------------------------------------------------------ async


async def test_async_client(sim: Simulator) -> None:
    async with sim.async_client() as client:
        r = await client.chat.completions.create(model="gpt-4.1", messages=USER)
        assert r.choices[0].message.content == "Answer: What is the capital of France?"
        stream = await client.chat.completions.create(
            model="gpt-4.1", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
        assert chunks[-1].usage is not None
        emb = await client.embeddings.create(model="m", input=["a", "b"])
        assert len(emb.data) == 2


# ------------------------------------------------------------------ pytest plugin


def test_pytest_plugin_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_sync(simulator, openai_client):
            messages = [{"role": "user", "content": "x"}]
            r = openai_client.chat.completions.create(model="gpt-4.1", messages=messages)
            assert r.model == "gpt-4.1"
            assert openai_client.max_retries == 0
            assert len(simulator.chat_requests()) == 1

        @pytest.mark.asyncio
        async def test_async(simulator, async_openai_client):
            r = await async_openai_client.models.list()
            assert r.data
        """
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    installed = any(ep.name == "distillkit" for ep in importlib.metadata.entry_points(group="pytest11"))
    args = [] if installed else ["-p", "distillkit.testing.pytest_plugin"]
    result = pytester.runpytest_inprocess(*args, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
