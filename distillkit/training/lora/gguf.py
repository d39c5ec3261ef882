"""A peft LoRA adapter as a llama.cpp GGUF adapter, for the base model's GGUF file.

Needs only ``numpy``, ``safetensors`` and ``gguf`` (the package llama.cpp publishes), not
llama.cpp's ``convert_lora_to_gguf.py`` nor a Hugging Face config folder: the base model's GGUF
supplies the architecture, head counts and tensor shapes, and every adapter tensor is checked
against them.

What llama.cpp expects (``src/llama-adapter.cpp``, ``convert_lora_to_gguf.py``):

* metadata ``general.type = "adapter"``, ``adapter.type = "lora"``, ``adapter.lora.alpha`` and the
  base model's ``general.architecture``; llama.cpp scales each delta by ``alpha / rank``;
* for a base tensor ``blk.N.attn_q.weight`` (ggml ne ``[in, out]``), ``blk.N.attn_q.weight.lora_a``
  (ne ``[in, r]``) and ``...lora_b`` (ne ``[r, out]``). GGUF stores numpy shapes reversed, so peft's
  ``lora_A.weight`` ``(r, in)`` and ``lora_B.weight`` ``(out, r)`` are written as they are;
* llama models: ``convert_hf_to_gguf.py`` permutes the rows of ``q_proj`` and ``k_proj`` (llama.cpp's
  rotary layout), and transformers undoes that when it loads a GGUF. An adapter trained on the
  transformers model therefore needs the same row permutation on ``lora_B`` of q and k
  (``W = B @ A``: permuting the rows of ``W`` permutes the rows of ``B``).

Example:
    >>> base = "SmolLM2-135M-Instruct.Q4_1.gguf"
    >>> convert_peft_to_gguf("job/adapter", base, "job/adapter/adapter.gguf")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillkit.errors import TrainingError

__all__ = ["ADAPTER_GGUF", "LoRAConversionError", "convert_peft_to_gguf"]

#: The converted adapter's file name inside a peft adapter folder.
ADAPTER_GGUF = "adapter.gguf"

# Hugging Face module path (inside a decoder layer) -> llama.cpp tensor name.
_LAYER_MAP: dict[str, str] = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?:model\.)?layers\.(\d+)\.([a-z_]+\.[a-z_]+)\.lora_([AB])(?:\.default)?\.weight$"
)
_PERMUTED_ARCHS = frozenset({"llama"})  # architectures whose q/k rows convert_hf_to_gguf permutes


class LoRAConversionError(TrainingError):
    """The adapter cannot be converted; the message names the cause and the fix."""


@dataclass(frozen=True)
class _Base:
    architecture: str
    n_head: int
    n_head_kv: int
    shapes: dict[str, tuple[int, ...]]  # tensor name -> ggml ne (innermost first)


def _field(reader: Any, key: str) -> Any:
    import numpy as np

    field = reader.fields.get(key)
    if field is None:
        raise LoRAConversionError(f"the base GGUF has no {key!r}; is it a llama.cpp model file?")
    part = field.parts[field.data[0]]
    return bytes(part).decode() if part.dtype == np.uint8 else part.tolist()[0]


def _read_base(base_gguf: Path) -> _Base:
    """Architecture, head counts and tensor shapes of a GGUF model (memory-mapped, not loaded)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(base_gguf), "r")
    arch = str(_field(reader, "general.architecture"))
    n_head = int(_field(reader, f"{arch}.attention.head_count"))
    n_head_kv = (
        int(_field(reader, f"{arch}.attention.head_count_kv"))
        if (f"{arch}.attention.head_count_kv" in reader.fields)
        else n_head
    )
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}
    return _Base(arch, n_head, n_head_kv, shapes)


def _permute_rows(w: Any, n_head: int) -> Any:
    """convert_hf_to_gguf's ``LlamaModel.permute`` on the output rows of ``w`` (shape ``(out, ...)``)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert_peft_to_gguf(
    adapter_dir: str | Path, base_gguf: str | Path, out: str | Path, *, dtype: str = "f32"
) -> Path:
    """Write ``out``, a llama.cpp LoRA adapter, from the peft adapter saved in ``adapter_dir``.

    Args:
        adapter_dir: holds ``adapter_config.json`` and ``adapter_model.safetensors``.
        base_gguf: the base model's GGUF file (the one the adapter was trained on).
        out: the file to write.
        dtype: ``"f32"`` or ``"f16"`` (half the size).

    Returns:
        ``out``.

    Raises:
        LoRAConversionError: the adapter is not plain LoRA on the decoder's linear layers, or
            does not fit the base model.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    adapter_dir, out = Path(adapter_dir), Path(out)
    if dtype not in ("f32", "f16"):
        raise LoRAConversionError(f"dtype must be 'f32' or 'f16', not {dtype!r}")
    config_path, weights_path = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise LoRAConversionError(
            f"{adapter_dir} lacks adapter_config.json or adapter_model.safetensors",
            fix="Save the peft model with save_pretrained(folder) (safetensors, the default).",
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        raise LoRAConversionError("only plain LoRA converts (no DoRA, no other peft method)", fix="Use LoraConfig.")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise LoRAConversionError("rank_pattern / alpha_pattern do not convert: llama.cpp has one alpha per adapter")
    if config.get("modules_to_save"):
        raise LoRAConversionError("modules_to_save (fully trained layers) cannot go in a llama.cpp LoRA adapter")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    if config.get("use_rslora"):
        alpha *= math.sqrt(rank)  # rsLoRA scales by alpha/sqrt(r); llama.cpp by alpha'/r

    base = _read_base(Path(base_gguf))
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in load_file(str(weights_path)).items():
        match = _KEY.match(key)
        if match is None or match.group(2) not in _LAYER_MAP:
            raise LoRAConversionError(
                f"unsupported adapter tensor {key!r}",
                fix=f"Adapt only the decoder layers' linear projections ({', '.join(_LAYER_MAP)}), "
                "e.g. target_modules='all-linear'.",
            )
        name = f"blk.{match.group(1)}.{_LAYER_MAP[match.group(2)]}.weight"
        pairs.setdefault(name, {})[match.group(3)] = value.astype(np.float32)
    if not pairs:
        raise LoRAConversionError(f"{weights_path} holds no LoRA tensors")

    writer = gguf.GGUFWriter(str(out), arch=base.architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    np_dtype = np.float16 if dtype == "f16" else np.float32
    for name in sorted(pairs, key=_natural):
        if set(pairs[name]) != {"A", "B"}:
            raise LoRAConversionError(f"{name}: lora_A or lora_B is missing from the adapter")
        a, b = pairs[name]["A"], pairs[name]["B"]
        if name not in base.shapes:
            raise LoRAConversionError(f"{name} is not a tensor of the base model {base_gguf}; wrong base model?")
        n_in, n_out = base.shapes[name][0], base.shapes[name][1]
        if a.shape[1] != n_in or b.shape != (n_out, a.shape[0]):
            raise LoRAConversionError(
                f"{name}: adapter shapes A{a.shape} B{b.shape} do not fit the base ({n_out}x{n_in}); "
                "was it trained on another model?"
            )
        if base.architecture in _PERMUTED_ARCHS and name.endswith(("attn_q.weight", "attn_k.weight")):
            b = _permute_rows(b, base.n_head if ".attn_q." in name else base.n_head_kv)
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=np_dtype))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=np_dtype))
    out.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _natural(name: str) -> tuple[int, str]:
    match = re.match(r"blk\.(\d+)\.(.*)", name)
    return (int(match.group(1)), match.group(2)) if match else (-1, name)
