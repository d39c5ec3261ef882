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
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from statistics import mean
from typing import Any

from distillkit.training.lora.base_models import cache_dir, with_system_prompt
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


def batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches, length-grouped: shuffled, sorted by length within windows of 16
    batches (so a batch pads little), then the batches shuffled again."""
    import random

    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 16
    out: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lengths.__getitem__)
        out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def answer_loss(model: Any, input_ids: Any, mask: Any, labels: Any) -> tuple[Any, int, int | None]:
    """Summed cross-entropy over the answer tokens, their count, and how many of the batch's
    examples the model reproduces exactly (every answer token its top choice; None where the model
    computes its own loss). The output layer is applied to the answer's positions only.

    A causal LM's output layer over the whole sequence is a fifth of a small model's compute and
    most of its activation memory (batch x length x vocabulary); only the answer's positions carry a
    loss. Falls back to the model's own loss for a model without the usual decoder / head split.
    """
    import torch.nn.functional as F

    keep = labels[:, 1:] != IGNORE
    count = int(keep.sum())
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = getattr(base, "get_decoder", lambda: None)(), base.get_output_embeddings()
    if decoder is None or head is None:
        return model(input_ids=input_ids, attention_mask=mask, labels=labels).loss * count, count, None
    hidden = decoder(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
    logits = head(hidden[:, :-1][keep]).float()
    cap = getattr(base.config, "final_logit_softcapping", None)
    if cap:
        logits = (logits / cap).tanh() * cap
    targets = labels[:, 1:][keep]
    rows = keep.nonzero(as_tuple=True)[0]
    missed = rows[logits.detach().argmax(-1) != targets].unique().numel()
    return F.cross_entropy(logits, targets, reduction="sum"), count, int(keep.any(1).sum()) - missed


def micro_batches(batch: list[tuple[list[int], list[int]]], max_tokens: int) -> list[list[tuple[list[int], list[int]]]]:
    """``batch`` (sorted by length) cut so each piece pads to at most ``max_tokens`` tokens.

    The gradients of the pieces add up to the whole batch's, so an optimiser step sees the
    batch size asked for while the activations held at once stay bounded (a long example goes alone).
    """
    pieces: list[list[tuple[list[int], list[int]]]] = [[]]
    for example in sorted(batch, key=lambda e: len(e[0])):
        if pieces[-1] and len(example[0]) * (len(pieces[-1]) + 1) > max_tokens:
            pieces.append([])
        pieces[-1].append(example)
    return pieces


def tensors(batch: list[tuple[list[int], list[int]]], pad_id: int, device: str) -> tuple[Any, Any, Any]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` of a batch, on ``device``."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return input_ids.to(device), mask.to(device), labels.to(device)


class Progress:
    """Training progress as the job reports it: step, loss, examples per second, ETA; and when to stop.

    ``stop_exact``: training has learnt once, over the last ``window`` steps, all in the first
    epoch, at least this share of the examples was reproduced exactly (every answer token the
    model's top choice, so greedy decoding would answer as the teacher did). A first-epoch batch is
    measured before the model trains on it: these are examples it has not seen, so stopping means
    the answers are predicted, not memorised (later epochs never stop training). Exactness, not the
    mean token loss: a JSON answer's keys and punctuation are easy tokens that hide a wrong value.
    0 trains every epoch.
    """

    def __init__(self, job: Job, total: int, per_epoch: int, stop_exact: float, created_at: float) -> None:
        self.job, self.total, self.stop_exact = job, total, stop_exact
        self.window = max(3, math.ceil(per_epoch / 4))
        self.created_at = created_at
        self.losses: list[float] = []
        self.exact: list[tuple[int, int]] = []  # first-epoch steps: (examples reproduced, examples)
        self.examples = 0
        self.tokens = 0
        self.started = time.monotonic()
        self.first_step_s: float | None = None

    @property
    def step(self) -> int:
        return len(self.losses)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def add(self, loss: float, examples: int, tokens: int, *, exact: int | None = None, fresh: bool = True) -> None:
        self.losses.append(loss)
        if fresh and exact is not None:
            self.exact.append((exact, examples))
        self.examples += examples
        self.tokens += tokens
        if self.first_step_s is None:
            self.first_step_s = time.time() - self.created_at
        rate = self.examples / max(self.seconds, 1e-9)
        per_step = self.seconds / self.step
        self.job.report(
            "running",
            phase="training",
            step=self.step,
            total_steps=self.total,
            loss=loss,
            trained_tokens=self.tokens,
            examples_per_s=round(rate, 3),
            eta_s=round(per_step * (self.total - self.step), 1),
        )

    @property
    def recent_exact(self) -> float | None:
        """The share of examples reproduced exactly over the last ``window`` first-epoch steps."""
        recent = self.exact[-self.window :]
        if len(recent) < self.window or len(self.exact) != self.step:
            return None  # too few steps yet, or past the first epoch
        return sum(e for e, _ in recent) / max(1, sum(n for _, n in recent))

    def learnt(self) -> bool:
        share = self.recent_exact
        return self.stop_exact > 0 and share is not None and share >= self.stop_exact


def log(message: str) -> None:
    """A phase line in the job's ``train.log``."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def train(job: Job) -> dict[str, Any]:
    """Train the adapter; returns the metrics. Raises Cancelled when asked to stop."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    settings = job.settings
    base = job.spec["base_model"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # not on macOS
    threads = int(settings.get("threads") or cores or 1)
    torch.set_num_threads(threads)
    torch.manual_seed(int(settings["seed"]))
    device = settings.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    started = time.monotonic()

    job.report("running", phase="loading the base model")
    log(f"loading the base model {base} ({device}, {threads} threads)")
    tokenizer, model = load_base(base, dtype, bool(settings.get("local_files_only")), job.spec.get("chat_template"))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError(f"the tokenizer of {base} has neither a pad nor an end-of-sequence token")
    job.report("running", phase="tokenising")
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
    lengths = [len(ids) for ids, _ in features]
    median = sorted(lengths)[len(lengths) // 2]
    log(f"tokenised {len(features)} examples: {median} tokens median, {max(lengths)} longest")
    job.check()

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
    max_tokens = int(settings.get("max_batch_tokens") or 1 << 30)
    per_epoch = math.ceil(len(features) / batch_size)
    total = per_epoch * int(settings["epochs"])
    warmup = max(1, total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )
    progress = Progress(
        job, total, per_epoch, float(settings.get("stop_exact") or 0.0), job.spec.get("created_at", time.time())
    )
    job.report("running", phase="training", step=0, total_steps=total)
    log(f"training: {total} steps of {batch_size} examples at most")
    for epoch in range(int(settings["epochs"])):
        for batch_ids in batches(lengths, batch_size, int(settings["seed"]), epoch):
            job.check()
            batch = [features[i] for i in batch_ids]
            pieces = [tensors(piece, pad_id, device) for piece in micro_batches(batch, max_tokens)]
            count = sum(int((labels[:, 1:] != IGNORE).sum()) for _, _, labels in pieces)
            loss_sum = 0.0
            exact_known: int | None = 0  # None: the model computes its own loss
            for input_ids, mask, labels in pieces:
                piece_loss, _, piece_exact = answer_loss(model, input_ids, mask, labels)
                (piece_loss / count).backward()
                loss_sum += float(piece_loss.detach())
                exact_known = None if exact_known is None or piece_exact is None else exact_known + piece_exact
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimiser.step()
            schedule.step()
            optimiser.zero_grad(set_to_none=True)
            tokens = sum(int(mask.sum()) for _, mask, _ in pieces)
            progress.add(loss_sum / max(count, 1), len(batch), tokens, exact=exact_known, fresh=epoch == 0)
            if progress.learnt():
                break
        if progress.learnt():
            log(
                f"learnt at step {progress.step}: {progress.recent_exact:.0%} of the examples of the last "
                f"{progress.window} steps, unseen before, reproduced exactly (stop at {progress.stop_exact:.0%})"
            )
            break
    train_seconds = progress.seconds
    log(f"trained {progress.step} steps in {train_seconds:.1f} s ({progress.examples / train_seconds:.2f} examples/s)")
    job.check()
    model.save_pretrained(job.folder / ADAPTER)
    tokenizer.save_pretrained(job.folder / ADAPTER)
    if base.endswith(".gguf"):  # llama.cpp serves a GGUF base: the adapter goes beside the peft one, converted
        from distillkit.training.lora.gguf import ADAPTER_GGUF, convert_peft_to_gguf

        job.report("running", phase="converting the adapter for llama.cpp", step=progress.step, total_steps=total)
        log("converting the adapter for llama.cpp")
        convert_peft_to_gguf(job.folder / ADAPTER, base, job.folder / ADAPTER / ADAPTER_GGUF)
    losses = progress.losses
    epoch_losses = [mean(losses[i : i + per_epoch]) for i in range(0, len(losses), per_epoch)]
    peak_gpu = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return {
        "base_model": base,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": threads,
        "examples": len(features),
        "steps": progress.step,
        "planned_steps": total,
        "learnt_early": progress.step < total,
        "trained_examples": progress.examples,
        "trained_tokens": progress.tokens,
        "max_length": max(lengths),
        "losses": losses,
        "epoch_losses": epoch_losses,
        "seconds": time.monotonic() - started,
        "train_seconds": train_seconds,
        "examples_per_s": progress.examples / train_seconds,
        "step_s": train_seconds / progress.step,
        "first_step_s": progress.first_step_s,
        "peak_gpu_bytes": peak_gpu,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def load_base(base: str, dtype: Any, local: bool, chat_template: str | None = None) -> tuple[Any, Any]:
    """The tokenizer and model of ``base``; ``chat_template`` replaces the tokenizer's (a base model's
    file may have none: the packaged model supplies the one its server renders with).

    A ``.gguf`` base (a packaged model such as smollm2-135m) is dequantised once and kept as
    safetensors in ``DISTILLKIT_CACHE_DIR`` (default ``~/.cache/distillkit``): converting takes
    about 20 s on two cores, loading the copy well under a second, so every later job, of any
    application, reaches its first step sooner.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def templated(tokenizer: Any) -> Any:
        if chat_template:
            tokenizer.chat_template = chat_template
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"the tokenizer of {base} has no chat template; use an instruct / chat model")
        return tokenizer

    if not base.endswith(".gguf"):
        tokenizer = templated(AutoTokenizer.from_pretrained(base, local_files_only=local))
        return tokenizer, AutoModelForCausalLM.from_pretrained(base, dtype=dtype, local_files_only=local)
    gguf = Path(base)
    stat = gguf.stat()
    root = cache_dir() / "base"
    cache = root / f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if (cache / "config.json").is_file():
        tokenizer = templated(AutoTokenizer.from_pretrained(cache, local_files_only=True))
        return tokenizer, AutoModelForCausalLM.from_pretrained(cache, dtype=dtype, local_files_only=True)
    where = {"gguf_file": gguf.name}
    tokenizer = templated(AutoTokenizer.from_pretrained(gguf.parent, local_files_only=local, **where))
    model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=dtype, local_files_only=local, **where)
    # The weights are plain floats once dequantised; only the marker says "gguf", and it blocks saving.
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    partial = cache.with_name(f"{cache.name}.{os.getpid()}.partial")
    try:  # written aside and renamed: a concurrent or interrupted job never reads half a copy
        root.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(cache)
    except OSError as exc:  # a full disk or a lost race costs speed, never the job
        log(f"the base model's dequantised copy was not kept ({exc})")
        shutil.rmtree(partial, ignore_errors=True)
    return tokenizer, model


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
