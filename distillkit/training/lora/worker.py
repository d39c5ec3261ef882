"""The LoRA training process: ``python -m distillkit.training.lora.worker JOB_DIR LOCK_FD``.

Started by :class:`~distillkit.training.lora.provider.LoRAFineTuningProvider`, never imported by the
application. It reads ``job.json`` and ``train.jsonl`` from the job folder, trains a LoRA
adapter on the assistant turns (the prompt's tokens are masked out of the loss), and writes
``status.json`` (state, step, loss) as it goes, then ``adapter/`` and ``metrics.json``. SIGTERM
(the provider's ``cancel``) stops it at the next step. It holds the inherited ``LOCK_FD``
until it exits, which is how the provider tells that it still runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillkit.training.lora.base_models import with_system_prompt
from distillkit.training.lora.files import ADAPTER, DATA, METRICS, SPEC, STATUS, read_json, write_json

IGNORE = -100  # label of tokens the loss skips


class Cancelled(Exception):
    """The provider asked the job to stop."""


class Job:
    """One job folder: its spec, its examples, and the status it reports."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        spec = read_json(folder / SPEC)
        if spec is None:
            raise ValueError(f"no {SPEC} in {folder}")
        self.spec = spec
        self.settings: dict[str, Any] = spec["settings"]
        self.stop_requested = False

    def report(self, state: str, **fields: Any) -> None:
        write_json(self.folder / STATUS, {"state": state, "updated_at": time.time(), **fields})

    def check(self) -> None:
        if self.stop_requested:
            raise Cancelled


def chat_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages as chat templates expect them (tool-call arguments as objects, no None)."""
    out = []
    for message in messages:
        message = dict(message)
        if message.get("content") is None:
            message["content"] = ""
        calls = []
        for call in message.get("tool_calls") or []:
            function = dict(call["function"])
            if isinstance(function.get("arguments"), str):
                with contextlib.suppress(json.JSONDecodeError):
                    function["arguments"] = json.loads(function["arguments"])
            calls.append({**call, "function": function})
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out


def encode(
    tokenizer: Any, example: dict[str, Any], max_length: int, system_prompt: str | None = None
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one example: the prompt in the model's chat template, then the answer.

    Only the final assistant turn is learnt; the prompt is the same text the server's chat
    template produces for the request (with ``add_generation_prompt``), so training matches serving.
    ``system_prompt`` goes first when the example has no system message (packaged base models:
    :mod:`distillkit.student` does the same to each request).
    """
    messages = with_system_prompt(chat_messages(example["messages"]), system_prompt)
    tools = example.get("tools") or None
    prompt = tokenizer.apply_chat_template(messages[:-1], tools=tools, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    if not full.startswith(prompt):  # a template that renders earlier turns differently at the end
        prompt = os.path.commonprefix([prompt, full])  # noqa: RUF071 - characters are what we want
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"][:max_length]
    keep = max_length - len(answer_ids)
    prompt_ids = prompt_ids[-keep:] if keep > 0 else []
    return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids


def train(job: Job) -> dict[str, Any]:
    """Train the adapter; returns the metrics. Raises Cancelled when asked to stop."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = job.settings
    base = job.spec["base_model"]
    local = bool(settings.get("local_files_only"))
    torch.manual_seed(int(settings["seed"]))
    device = settings.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    started = time.monotonic()

    job.report("running", phase="loading the base model")
    # A .gguf base (a packaged model such as smollm2-135m) is loaded from its folder, dequantised.
    where = {"gguf_file": Path(base).name} if base.endswith(".gguf") else {}
    source = str(Path(base).parent) if where else base
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local, **where)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the tokenizer of {base} has no chat template; use an instruct / chat model")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError(f"the tokenizer of {base} has neither a pad nor an end-of-sequence token")
    lines = (job.folder / DATA).read_text(encoding="utf-8").splitlines()
    system_prompt = job.spec.get("system_prompt")
    features = [
        encode(tokenizer, json.loads(line), int(settings["max_length"]), system_prompt)
        for line in lines
        if line.strip()
    ]
    features = [f for f in features if any(label != IGNORE for label in f[1])]
    if not features:
        raise ValueError("no example has an answer to learn")
    job.check()

    model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local, **where)
    model = model.to(device)
    if job.spec.get("init_adapter"):
        model = PeftModel.from_pretrained(model, job.spec["init_adapter"], is_trainable=True)
    else:
        targets = settings["target_modules"]
        model = get_peft_model(
            model,
            LoraConfig(
                r=int(settings["rank"]),
                lora_alpha=int(settings["alpha"]),
                lora_dropout=float(settings["dropout"]),
                target_modules=targets if isinstance(targets, str) else list(targets),
                task_type="CAUSAL_LM",
            ),
        )
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=float(settings["learning_rate"]), weight_decay=0.0)
    batch_size = int(settings["batch_size"])
    per_epoch = math.ceil(len(features) / batch_size)
    total = per_epoch * int(settings["epochs"])
    warmup = max(1, total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )
    generator = torch.Generator().manual_seed(int(settings["seed"]))
    losses: list[float] = []
    tokens = 0
    step = 0
    job.report("running", phase="training", step=0, total_steps=total)
    for _epoch in range(int(settings["epochs"])):
        order = torch.randperm(len(features), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            job.check()
            batch = [features[i] for i in order[start : start + batch_size]]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, labs) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, : len(labs)] = torch.tensor(labs)
                mask[row, : len(ids)] = 1
            loss = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimiser.step()
            schedule.step()
            optimiser.zero_grad(set_to_none=True)
            step += 1
            tokens += int(mask.sum())
            losses.append(float(loss.detach()))
            job.report(
                "running", phase="training", step=step, total_steps=total, loss=losses[-1], trained_tokens=tokens
            )
    job.check()
    model.save_pretrained(job.folder / ADAPTER)
    tokenizer.save_pretrained(job.folder / ADAPTER)
    if where:  # llama.cpp serves a GGUF base: the adapter goes beside the peft one, converted
        from distillkit.training.lora.gguf import ADAPTER_GGUF, convert_peft_to_gguf

        job.report("running", phase="converting the adapter for llama.cpp", step=step, total_steps=total)
        convert_peft_to_gguf(job.folder / ADAPTER, base, job.folder / ADAPTER / ADAPTER_GGUF)
    epoch_losses = [sum(losses[i : i + per_epoch]) / len(losses[i : i + per_epoch]) for i in range(0, total, per_epoch)]
    peak_gpu = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return {
        "base_model": base,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "examples": len(features),
        "steps": total,
        "trained_tokens": tokens,
        "losses": losses,
        "epoch_losses": epoch_losses,
        "seconds": time.monotonic() - started,
        "peak_gpu_bytes": peak_gpu,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main(argv: Sequence[str]) -> int:
    job = Job(Path(argv[1]))
    # argv[2] is the inherited lock's descriptor: it is simply kept open until the process ends.

    def stop(signum: int, frame: Any) -> None:
        job.stop_requested = True

    signal.signal(signal.SIGTERM, stop)
    try:
        metrics = train(job)
    except Cancelled:
        job.report("cancelled", error="cancelled")
        print("cancelled", flush=True)
        return 0
    except Exception as exc:
        traceback.print_exc()
        job.report("failed", error=f"{type(exc).__name__}: {str(exc)[:500]}")
        return 1
    write_json(job.folder / METRICS, metrics)
    job.report("trained", trained_tokens=metrics["trained_tokens"], loss=metrics["losses"][-1])
    print(
        f"trained {metrics['examples']} examples, {metrics['steps']} steps in {metrics['seconds']:.1f} s; "
        f"loss {metrics['epoch_losses'][0]:.4f} -> {metrics['epoch_losses'][-1]:.4f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
