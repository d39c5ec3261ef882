"""A tiny chat model built on the spot, for testing LoRA training without downloading anything.

A byte-level BPE tokenizer is trained on the given texts, and a two-layer Llama with random
weights is saved beside it with a ChatML chat template, in the folder layout of a hub model.
It learns (its loss goes down), saves and loads adapters, and generates; it knows no language.
Needs ``distillkit[lora]``.

Example:
    >>> folder = build_tiny_chat_model(tmp_path / "tiny", ["Where is my card?", "In 3 days."])  # doctest: +SKIP
    >>> LoRAFineTuningProvider(work, base_model=str(folder), settings=LoRASettings(device="cpu"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["CHATML_TEMPLATE", "build_tiny_chat_model"]

#: The ChatML template (as Qwen's models use it), without tool support.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_chat_model(
    folder: str | os.PathLike[str], texts: Iterable[str], *, vocab_size: int = 400, hidden: int = 64, seed: int = 0
) -> Path:
    """Save a tiny random chat model and its tokenizer (trained on ``texts``) to ``folder``.

    Returns:
        The folder, which ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer`` load.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = [*texts, "system user assistant"]
    tokenizer.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Frozen output weights of the usual size (std 0.02) cap the logits near +-1.3 in so small
        # a model, and with them how far an adapter can lower the loss; wider ones let it learn.
        model.lm_head.weight.mul_(25.0)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
