"""The LoRA worker's training step, in this process: what makes it fast must not change what it learns.

Length-grouped batches cover every example once per epoch; a batch trained in pieces gets the
gradient of the whole batch; the loss computed on the answer positions only equals the model's
own loss; training stops once the loss of examples it has not trained on is low; the settings
table reads every field from the environment. A tiny model built here, nothing downloaded.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

import torch

from distillkit.errors import ConfigError
from distillkit.testing.tiny_model import build_tiny_chat_model
from distillkit.training.lora import LoRASettings
from distillkit.training.lora.worker import IGNORE, Progress, answer_loss, batches, micro_batches, tensors


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = build_tiny_chat_model(tmp_path_factory.mktemp("models") / "tiny", ["a b c d e f g h"], vocab_size=200)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(0)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, parameter in peft.named_parameters():  # B starts at zero: give it weights, so gradients differ
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    return peft


def examples(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(3, 150) for _ in range(rng.randrange(3, 30))]
        answer = [rng.randrange(3, 150) for _ in range(rng.randrange(1, 8))]
        out.append((prompt + answer, [IGNORE] * len(prompt) + answer))
    return out


def gradients(model: Any, pieces: list[list[tuple[list[int], list[int]]]]) -> list[Any]:
    model.zero_grad(set_to_none=True)
    parts = [tensors(piece, 0, "cpu") for piece in pieces]
    count = sum(int((labels[:, 1:] != IGNORE).sum()) for _, _, labels in parts)
    for input_ids, mask, labels in parts:
        loss, _, _ = answer_loss(model, input_ids, mask, labels)
        (loss / count).backward()
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_length_grouped_batches_cover_every_example_once_an_epoch_and_pad_little() -> None:
    lengths = [random.Random(i).randrange(5, 300) for i in range(500)]
    for epoch in range(2):
        found = batches(lengths, 8, seed=0, epoch=epoch)
        assert sorted(i for batch in found for i in batch) == list(range(500))
        padded = sum(len(b) * max(lengths[i] for i in b) for b in found)
        assert padded < 1.15 * sum(lengths)  # random batches pad about 1.6x here
    assert batches(lengths, 8, 0, 0) != batches(lengths, 8, 0, 1)


def test_micro_batches_bound_the_padded_tokens_and_keep_every_example() -> None:
    batch = examples(8)
    pieces = micro_batches(batch, 64)
    assert sorted(map(str, (e for p in pieces for e in p))) == sorted(map(str, batch))
    for piece in pieces:
        assert len(piece) == 1 or len(piece) * max(len(ids) for ids, _ in piece) <= 64
    assert len(micro_batches(batch, 1 << 30)) == 1


def test_a_batch_in_pieces_gets_the_whole_batch_gradient(model: Any) -> None:
    batch = examples(8, seed=1)
    whole = gradients(model, [batch])
    pieces = micro_batches(batch, 40)
    assert len(pieces) > 2
    for a, b in zip(whole, gradients(model, pieces), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_answer_only_loss_is_the_models_own_loss(model: Any) -> None:
    input_ids, mask, labels = tensors(examples(6, seed=2), 0, "cpu")
    with torch.no_grad():
        summed, count, _ = answer_loss(model, input_ids, mask, labels)
        own = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    assert count == int((labels[:, 1:] != IGNORE).sum())
    torch.testing.assert_close(summed / count, own, rtol=1e-5, atol=1e-6)


def test_training_stops_once_unseen_examples_are_reproduced_exactly() -> None:
    reports: list[dict[str, Any]] = []
    job = SimpleNamespace(report=lambda state, **fields: reports.append(fields))
    progress = Progress(job, total=40, per_epoch=20, stop_exact=0.95, created_at=0.0)  # type: ignore[arg-type]
    assert progress.window == 5
    for exact in [0, 4, 8, 8, 8, 8]:
        progress.add(0.01, 8, 100, exact=exact)
        assert not progress.learnt()  # the window still holds a batch mostly wrong
    progress.add(0.01, 8, 100, exact=8)
    assert progress.learnt() and progress.recent_exact == 1.0
    assert reports[-1]["step"] == 7 and reports[-1]["examples_per_s"] > 0 and "eta_s" in reports[-1]
    never = Progress(job, total=40, per_epoch=20, stop_exact=0.0, created_at=0.0)  # type: ignore[arg-type]
    for _ in range(10):
        never.add(0.0, 8, 100, exact=8)
    assert not never.learnt()
    memorised = Progress(job, total=40, per_epoch=20, stop_exact=0.95, created_at=0.0)  # type: ignore[arg-type]
    for step in range(30):  # exact answers in the second epoch are of examples already trained on
        memorised.add(0.0, 8, 100, exact=0 if step < 20 else 8, fresh=step < 20)
        assert not memorised.learnt()


def test_exactness_counts_the_examples_whose_every_answer_token_is_the_top_choice(model: Any) -> None:
    input_ids, mask, labels = tensors(examples(6, seed=3), 0, "cpu")
    with torch.no_grad():
        _, _, exact = answer_loss(model, input_ids, mask, labels)
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
    keep = labels[:, 1:] != IGNORE
    right = (logits.argmax(-1) == labels[:, 1:]) | ~keep
    assert exact == int(right.all(1).sum())
    forced = labels.clone()  # make the labels the model's own top choices: every example is exact
    forced[:, 1:][keep] = logits.argmax(-1)[keep]
    with torch.no_grad():
        assert answer_loss(model, input_ids, mask, forced)[2] == 6


def test_every_lora_setting_is_read_from_the_environment() -> None:
    settings = LoRASettings.configured(
        "smollm2-135m",
        {
            "DISTILLKIT_LORA_RANK": "8",
            "DISTILLKIT_LORA_LEARNING_RATE": "5e-4",
            "DISTILLKIT_LORA_THREADS": "1",
            "DISTILLKIT_LORA_MAX_BATCH_TOKENS": "none",
            "DISTILLKIT_LORA_TARGET_MODULES": "q_proj, v_proj",
            "DISTILLKIT_LORA_STOP_EXACT": "0",
        },
    )
    assert (settings.rank, settings.learning_rate, settings.threads) == (8, 5e-4, 1)
    assert settings.max_batch_tokens is None and settings.stop_exact == 0.0
    assert settings.target_modules == ("q_proj", "v_proj")
    assert settings.dropout == 0.0 and settings.device == "cpu"  # the packaged model's defaults stay
    assert LoRASettings.configured("org/other-model", {}).stop_exact == 0.0
    with pytest.raises(ConfigError, match="DISTILLKIT_LORA_EPOCHS='two' is not a number") as caught:
        LoRASettings.configured(None, {"DISTILLKIT_LORA_EPOCHS": "two"})
    assert caught.value.variable == "DISTILLKIT_LORA_EPOCHS"
    with pytest.raises(ConfigError) as caught:
        LoRASettings.configured(None, {"DISTILLKIT_LORA_BATCH_SIZE": "0"})
    assert caught.value.variable == "DISTILLKIT_LORA_BATCH_SIZE"
