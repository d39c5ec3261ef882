"""The LoRA provider, for real: a tiny chat model built here, training in a separate process.

Nothing is downloaded: the model (two layers, random weights) and its tokenizer are made by
:func:`distillkit.testing.tiny_model.build_tiny_chat_model`. Needs ``distillkit[lora]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.errors import ConfigError
from distillkit.state import ModelRegistry
from distillkit.store import EdgeStore
from distillkit.testing import Simulator
from distillkit.testing.tiny_model import build_tiny_chat_model
from distillkit.training import OpenAIDatasetProvider, Trainer
from distillkit.training.lora import LoRAFineTuningProvider, LoRASettings, VLLMServer
from distillkit.training.lora.files import read_json

from .conftest import add_points, payloads

CARD = "Your card ships within 3 days."
TOP_UP = "Top up in the app under Wallet."
RATES = "Rates update every minute."
CARD_QUESTIONS = [
    "Where is my new card?",
    "My card has not arrived yet.",
    "When will my card be delivered?",
    "How long does card delivery take?",
    "I am still waiting for my card.",
    "Has my card been shipped?",
    "Can you track my card order?",
    "The card I ordered never came.",
]
TOP_UP_QUESTIONS = [
    "How do I top up my account?",
    "Can I add money with a bank transfer?",
    "What is the fastest way to top up?",
    "How can I put money into my wallet?",
    "Is there a fee to top up?",
    "Where do I add funds?",
    "My top up is not showing.",
    "Top up with a debit card, how?",
]
RATE_QUESTIONS = [
    "What exchange rate do you use?",
    "How often do exchange rates change?",
    "Why did the rate change during my payment?",
    "Is the euro to dollar rate fixed?",
    "Where can I see today's rates?",
    "Do you add a markup to the rate?",
    "Which rate applies at weekends?",
    "Are rates the same in the app and online?",
    "Can I lock an exchange rate?",
    "Who sets your currency rates?",
]
QUESTIONS = CARD_QUESTIONS + TOP_UP_QUESTIONS
ANSWERS = {
    **dict.fromkeys(CARD_QUESTIONS, CARD),
    **dict.fromkeys(TOP_UP_QUESTIONS, TOP_UP),
    **dict.fromkeys(RATE_QUESTIONS, RATES),
}
#: Settings that make the tiny model learn its few answers in seconds on a CPU.
FAST = LoRASettings(
    device="cpu", epochs=10, learning_rate=1e-2, batch_size=4, rank=8, alpha=16, dropout=0.0, local_files_only=True
)
#: Settings for a job that runs until it is stopped.
ENDLESS = LoRASettings(device="cpu", epochs=100_000, batch_size=1, rank=8, local_files_only=True)


def teacher_answer(question: str) -> str:
    return ANSWERS.get(question, "I cannot help with that.")


def record(question: str) -> dict[str, Any]:
    return {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
        "response": {"role": "assistant", "content": teacher_answer(question)},
        "params": {},
    }


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [*ANSWERS, CARD, TOP_UP, RATES, "Be brief.", "I cannot help with that."]
    return build_tiny_chat_model(tmp_path_factory.mktemp("models") / "tiny", texts)


@pytest.fixture(autouse=True)
def _no_training_process_outlives_its_test(tmp_path: Path) -> Iterator[None]:
    """A test that fails half-way must not leave an endless training process eating the CPU."""
    yield
    for spec in (tmp_path / "lora").glob("*/job.json"):
        pid = (read_json(spec) or {}).get("pid")
        if isinstance(pid, int):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def training_file() -> bytes:
    return OpenAIDatasetProvider().build([record(q) for q in QUESTIONS]).data


def provider(tmp_path: Path, tiny_model: Path, settings: LoRASettings = FAST, **kwargs: Any) -> LoRAFineTuningProvider:
    return LoRAFineTuningProvider(tmp_path / "lora", base_model=str(tiny_model), settings=settings, **kwargs)


def wait_done(p: LoRAFineTuningProvider, job_id: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = p.poll(job_id)
        if status.done:
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {p.poll(job_id)} after {timeout} s")


def wait_training(p: LoRAFineTuningProvider, job_id: str, timeout: float = 60.0) -> None:
    """Until the process is past loading and has taken optimiser steps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_json(p.job_dir(job_id) / "status.json") or {}
        if (status.get("step") or 0) >= 2:
            return
        assert status.get("state") in ("queued", "running"), status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not start training")


def generate(model_dir: Path, adapter: Path | None, question: str) -> str:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def test_a_job_learns_the_teachers_answers_and_the_adapter_loads_back_and_generates(
    tmp_path: Path, tiny_model: Path, training_file: bytes
) -> None:
    p = provider(tmp_path, tiny_model)
    job_id = p.start(training_file, base_model="ignored", namespace="support", suffix="support")

    status = wait_done(p, job_id)

    assert status.succeeded, status
    assert status.model == job_id and status.trained_tokens and status.trained_tokens > 0
    metrics = p.metrics(job_id)
    assert metrics is not None and metrics["examples"] == len(QUESTIONS)
    assert metrics["epoch_losses"][-1] < metrics["epoch_losses"][0] / 10  # the loss went down
    adapter = p.job_dir(job_id) / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == FAST.rank
    # The random base model says nothing useful; with the adapter it answers like the teacher.
    assert generate(tiny_model, None, "Has my card been shipped?") != CARD
    assert generate(tiny_model, adapter, "Has my card been shipped?") == CARD
    assert generate(tiny_model, adapter, "Where do I add funds?") == TOP_UP


def test_only_the_answer_is_learnt_in_the_models_own_chat_template(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from distillkit.training.lora.worker import IGNORE, encode

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    example = json.loads(OpenAIDatasetProvider().encode([OpenAIDatasetProvider().example(record(QUESTIONS[0]))]))
    ids, labels = encode(tokenizer, example, max_length=512)

    text = tokenizer.decode(ids)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhere is my new card?<|im_end|>\n"
        f"<|im_start|>assistant\n{CARD}<|im_end|>\n"
    )
    learnt = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE])
    assert learnt == CARD + "<|im_end|>\n"
    # Past max_length, the prompt loses its oldest tokens and the answer stays whole.
    short_ids, short_labels = encode(tokenizer, example, max_length=len(ids) - 5)
    assert len(short_ids) == len(ids) - 5 and short_labels[-len(labels) + 5 :] == labels[5:]


def test_a_killed_training_process_is_a_failed_job_and_nothing_flips(
    tmp_path: Path, tiny_model: Path, store: EdgeStore
) -> None:
    ids = add_points(store, 10)
    p = provider(tmp_path, tiny_model, ENDLESS)
    trainer = Trainer(
        store=lambda: store,
        registry=ModelRegistry(lambda: store),
        config=DistillConfig(path="unused", min_examples=10),
        dataset_provider=OpenAIDatasetProvider(),
        fine_tuning_provider=p,
    )
    [started] = trainer.tick()
    assert started.status == "started" and started.job_id is not None
    wait_training(p, started.job_id)

    pid = read_json(p.job_dir(started.job_id) / "job.json")["pid"]  # type: ignore[index]
    os.killpg(pid, signal.SIGKILL)  # as the OOM killer would
    [ended] = trainer.wait([started], timeout=30)

    assert ended.status == "failed" and "killed" in (ended.reason or "")
    assert all(payload["indexed"] is False for payload in payloads(store).values())
    assert set(payloads(store)) == set(ids)
    assert ModelRegistry(lambda: store).get("ns") is None
    # The next round tries again with the same points.
    [retried] = trainer.tick()
    assert retried.status == "started" and retried.job_id != started.job_id
    p.cancel(retried.job_id)  # type: ignore[arg-type]
    assert wait_done(p, retried.job_id).status == "cancelled"  # type: ignore[arg-type]


def test_a_base_model_that_cannot_load_fails_the_job_with_the_reason(tmp_path: Path, training_file: bytes) -> None:
    p = LoRAFineTuningProvider(tmp_path / "lora", base_model=str(tmp_path / "no-such-model"), settings=FAST)
    job_id = p.start(training_file, base_model="ignored", namespace="ns")

    status = wait_done(p, job_id)

    assert status.status == "failed" and status.error and "no-such-model" in status.error
    assert not (p.job_dir(job_id) / "adapter").exists()


@pytest.mark.parametrize("name", ["gpt-4.1-nano-2025-04-14", "ft:gpt-4.1-mini-2025-04-14:org::x", "o3-mini", "o4-mini"])
def test_an_openai_model_name_as_the_base_is_a_config_error(tmp_path: Path, training_file: bytes, name: str) -> None:
    p = LoRAFineTuningProvider(tmp_path / "lora", settings=FAST)
    with pytest.raises(ConfigError, match="DISTILLKIT_BASE_MODEL") as exc:
        p.start(training_file, base_model=name, namespace="ns")
    assert "Qwen" in str(exc.value)
    assert not (tmp_path / "lora").exists() or not any((tmp_path / "lora").iterdir())


def test_cancel_stops_the_training_process_at_its_next_step(
    tmp_path: Path, tiny_model: Path, training_file: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted-openai-key")
    monkeypatch.setenv("DISTILLKIT_DISTILLED_API_KEY", "planted-distilled-key")
    p = provider(tmp_path, tiny_model, ENDLESS)
    job_id = p.start(training_file, base_model="ignored", namespace="ns")
    wait_training(p, job_id)
    # The training process got no API key: it needs none.
    pid = read_json(p.job_dir(job_id) / "job.json")["pid"]  # type: ignore[index]
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"planted" not in environ and b"PATH=" in environ

    p.cancel(job_id)
    status = wait_done(p, job_id, timeout=30)

    assert status.status == "cancelled"
    written = read_json(p.job_dir(job_id) / "status.json")
    assert written is not None and written["state"] == "cancelled"
    assert "cancelled" in (p.job_dir(job_id) / "train.log").read_text()  # it stopped itself, cleanly
    assert not (p.job_dir(job_id) / "adapter").exists()


def test_a_restarted_application_follows_a_job_an_earlier_process_started(
    tmp_path: Path, tiny_model: Path, training_file: bytes
) -> None:
    longer = dataclasses.replace(FAST, epochs=60)  # a few seconds: still running when polled below
    first = provider(tmp_path, tiny_model, longer)
    job_id = first.start(training_file, base_model="ignored", namespace="ns")
    wait_training(first, job_id)
    del first  # the application restarts; the training process does not care

    again = provider(tmp_path, tiny_model, longer)
    running = again.poll(job_id)
    assert running.status == "running"
    assert re.fullmatch(
        r"training step \d+/240, loss \d+\.\d{3}, [\d.]+ examples/s, ETA \d+ s", running.progress or ""
    ), running.progress
    assert wait_done(again, job_id).succeeded


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator() as s:
        yield s


def test_end_to_end_capture_train_register_with_vllm_and_route(
    sim: Simulator, tmp_path: Path, tiny_model: Path
) -> None:
    """Captured teacher answers → a LoRA job → load_lora_adapter → similar requests go to the adapter."""
    sim.answer = lambda request: teacher_answer(request["messages"][-1]["content"])
    lora = provider(tmp_path, tiny_model, server=VLLMServer(sim.base_url))
    distiller = Distiller(
        # Every capture trains here (the promotion gate's held-out split is tested in test_gate.py).
        DistillConfig(path=str(tmp_path / "store"), min_examples=10, distilled_base_url=sim.base_url, holdout=0.0),
        fine_tuning_provider=lora,
    )
    client = distillkit.wrap(sim.client(), distiller)

    def ask(question: str, **options: Any) -> Any:
        return client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
            distillkit=options,
        )

    try:
        for question in QUESTIONS:
            assert ask(question).model == "gpt-4.1"
        assert distiller.flush(10)
        busy = sim.inject("lora", status=503)  # vLLM is busy when the first training ends: the job waits

        [round_] = distiller.train_now(wait=True, timeout=120)

        assert round_.status == "succeeded" and round_.examples == len(QUESTIONS), round_
        assert round_.model is not None and round_.model.startswith("distillkit-default-")
        adapter = lora.job_dir(round_.job_id) / "adapter"  # type: ignore[arg-type]
        assert busy.times == 0 and sim.lora_adapters == {round_.model: str(adapter)}
        assert distiller.store.count(namespace="default", indexed=True) == len(QUESTIONS)

        routed = ask("Has my card been shipped?")
        info = distillkit.route_info(routed)
        assert info is not None and info.routed and routed.model == round_.model
        assert sim.chat_requests(model=round_.model)  # the adapter's name, over HTTP, as vLLM serves it
        assert ask("What is the capital of France?").model == "gpt-4.1"

        # Incremental: the next job continues from the active adapter, on the new captures and a
        # replayed sample of the trained ones (half as many, DISTILLKIT_REPLAY's default).
        for question in RATE_QUESTIONS:
            ask(question, route=False)
        assert distiller.flush(10)
        [second] = distiller.train_now(wait=True, timeout=120)
        # New: the ten questions, and the one about France the teacher answered; then 6 replayed.
        new = len(RATE_QUESTIONS) + 1
        assert second.status == "succeeded" and second.examples == new + round(new * 0.5), second
        assert distiller.store.count(namespace="default", indexed=True) == len(QUESTIONS) + new
        spec = read_json(lora.job_dir(second.job_id) / "job.json")  # type: ignore[arg-type]
        assert spec is not None and spec["init_adapter"] == str(adapter)
        assert spec["base_model"] == str(tiny_model)
        assert distiller.registry.get("default").model == second.model  # type: ignore[union-attr]
    finally:
        distillkit.unwrap(client)
        distiller.close()
