"""One payload layout for both backends: the helpers :mod:`~distillkit.store.edge` and
:mod:`~distillkit.store.server` share (so that a server-only deployment never loads qdrant-edge).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from distillkit.errors import DistillkitError, EmbedderMismatchError, StoreError
from distillkit.store.base import EmbedderInfo, Vector

__all__ = [
    "INDEXED_MIRROR",
    "INTEGER_FIELDS",
    "KEYWORD_FIELDS",
    "TENANT_FIELD",
    "check_vector",
    "mismatch_error",
    "plain_vector",
    "public_payload",
    "stored_payload",
    "translate_errors",
]

#: Private payload field mirroring ``indexed`` as 0/1: qdrant-edge 0.9.0 matches nothing on a
#: boolean ``MatchValue(True)``, while integer matches work. Both backends use it.
INDEXED_MIRROR = "_indexed"

#: Payload indexes both backends create, by field: the fields that filters use.
KEYWORD_FIELDS = ("namespace", "fingerprint")
INTEGER_FIELDS = (INDEXED_MIRROR,)
#: The field every search filters on: a tenant index on a Qdrant server.
TENANT_FIELD = "namespace"

# Exceptions that mean a bug in the caller or in distillkit, never a store failure: they are not
# translated to StoreError, so they surface as what they are.
_PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, AssertionError, NotImplementedError)


def stored_payload(payload: Mapping[str, Any], *, whole: bool = False) -> dict[str, Any]:
    """The payload as written to Qdrant: the caller's fields plus the private mirrors.

    Args:
        payload: the caller's fields.
        whole: this is a point's whole payload (an upsert), not a merge: a point without an
            ``indexed`` tag is then filtered as not indexed.

    Raises:
        ValueError: a field name starts with ``_`` (reserved for the store).
    """
    private = [k for k in payload if k.startswith("_")]
    if private:
        raise ValueError(f"payload fields starting with '_' are reserved for the store: {private}")
    out = dict(payload)
    if "indexed" in out:
        out[INDEXED_MIRROR] = 1 if out["indexed"] else 0
    elif whole:
        out[INDEXED_MIRROR] = 0
    return out


def public_payload(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """The payload as callers see it: private ``_`` fields removed."""
    return {k: v for k, v in (payload or {}).items() if not k.startswith("_")}


def check_vector(vector: Vector | None, dim: int) -> list[float]:
    """The vector as a list of floats, checked against the collection's dimension.

    Raises:
        ValueError: the vector is missing or has the wrong length.
    """
    if vector is None:
        raise ValueError("a vector is required")
    # One conversion in C for the common case (a float32 row from the embedder).
    values = vector.astype(float).tolist() if isinstance(vector, np.ndarray) else [float(x) for x in vector]
    if len(values) != dim:
        raise ValueError(f"vector has {len(values)} dimensions, the store expects {dim}")
    return values


#: Embedder names a store records, and the ``DISTILLKIT_EMBEDDER`` value that makes them again.
_EMBEDDER_SETTINGS = (
    ("wordllama-", "wordllama"),
    ("all-MiniLM-L6-v2-onnx-", "minilm"),
    ("openai:", "openai:"),
)


def mismatch_error(stored: EmbedderInfo, configured: EmbedderInfo, where: str) -> EmbedderMismatchError:
    """The error raised when a store is opened with another embedder than the one that built it."""
    setting = next((value for prefix, value in _EMBEDDER_SETTINGS if stored.name.startswith(prefix)), None)
    if setting == "openai:":
        setting = "openai:" + stored.name.split(":")[1]
    if setting:
        again = f"or set DISTILLKIT_EMBEDDER={setting} to keep using this store"
    elif stored.name == "all-MiniLM-L6-v2":
        again = "(the sentence-transformers MiniLM embedder is gone: its stores need a new DISTILLKIT_PATH)"
    else:
        again = f"or configure {stored.name!r} again"
    return EmbedderMismatchError(
        f"{where} was built with embedder {stored.name!r} (dim {stored.dim}), "
        f"but embedder {configured.name!r} (dim {configured.dim}) is configured.",
        variable="DISTILLKIT_PATH",
        fix=(
            "Use a new DISTILLKIT_PATH (or another collection) for the new embedder "
            "(its requests are captured and trained again), " + again + "."
        ),
    )


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Turn engine and OS failures into :class:`StoreError`, keeping the original as the cause."""
    try:
        yield
    except (DistillkitError, *_PROGRAMMING_ERRORS):
        raise
    except Exception as exc:
        raise StoreError(f"Qdrant failed to {action}: {type(exc).__name__}: {exc}") from exc


def plain_vector(raw: Any) -> list[float] | None:
    """The collection's one unnamed dense vector, as floats (None if the point has none)."""
    return [float(x) for x in raw] if isinstance(raw, list) and raw else None
