"""The storage contract: one protocol, one data model, several backends.

A *point* is one captured interaction: the query embedding as its vector and a payload that
holds everything needed to train on it and to route to it later (see
:meth:`distillkit.capture.sink.Interaction.payload`). ``indexed`` is the original project's tag:
True once a distilled model was trained on the point. Backends may add private fields of their
own (prefixed with ``_``) to work around engine limits; callers never see or set them.
A *record* is a small companion document kept beside the points, so that a restarted process
finds its state again (every kind is listed in :mod:`distillkit.state`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Union, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

__all__ = ["EmbedderInfo", "Hit", "Point", "SearchQuery", "Store", "Vector"]

#: A vector as the stores accept it: a sequence of floats or a 1-d numpy array.
Vector = Union[Sequence[float], "np.ndarray"]


@dataclass(frozen=True)
class EmbedderInfo:
    """What made a collection's vectors. Opening a store with another embedder is an error."""

    name: str
    dim: int


@dataclass(frozen=True)
class Point:
    """One stored interaction. ``vector`` is None when it was not asked for."""

    id: str
    payload: dict[str, Any]
    vector: Vector | None = None


@dataclass(frozen=True)
class Hit:
    """A search result: a point's id, its cosine similarity to the query, and its payload."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchQuery:
    """One search of a :meth:`Store.search_batch`: a vector and the filter fields of :meth:`Store.search`."""

    vector: Vector
    namespace: str
    fingerprint: str | None = None
    indexed: bool | None = None


@runtime_checkable
class Store(Protocol):
    """Where captured interactions and the companion records live.

    Every method may raise :class:`distillkit.errors.StoreError`; the router and the capture
    writer turn that into "the teacher answers" and a counted drop.
    """

    embedder: EmbedderInfo

    def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points (vectors required)."""
        ...

    def search(
        self,
        vector: Vector,
        *,
        namespace: str,
        fingerprint: str | None = None,
        indexed: bool | None = None,
        limit: int = 1,
        fields: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> list[Hit]:
        """Nearest points by cosine similarity, best first, filtered by the given fields.

        ``timeout``: seconds to wait at most while the store's engine is busy building its index
        (then :class:`~distillkit.errors.StoreBusyError`); None waits.
        """
        ...

    def search_batch(
        self, queries: Sequence[SearchQuery], *, limit: int = 1, fields: Sequence[str] | None = None
    ) -> list[list[Hit]]:
        """:meth:`search` for each query, in one call (the capture's near-duplicate checks); in order."""
        ...

    def set_payload(self, ids: Sequence[str], values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the payload of exactly these points."""
        ...

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        """The points with these ids (payload, and vectors when asked), in no particular order; missing ids
        are skipped."""
        ...

    def scroll(
        self, *, namespace: str | None = None, indexed: bool | None = None, batch_size: int = 256
    ) -> Iterator[Point]:
        """Every point matching the filter, page after page (payload only)."""
        ...

    def count(self, *, namespace: str | None = None, indexed: bool | None = None) -> int:
        """How many points match the filter (exact)."""
        ...

    def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        """A companion record, or None."""
        ...

    def put_record(self, kind: str, key: str, value: Mapping[str, Any]) -> None:
        """Create or replace a companion record (JSON-serialisable values)."""
        ...

    def delete_record(self, kind: str, key: str) -> None:
        """Remove a companion record; a missing one is not an error."""
        ...

    def list_records(self, kind: str) -> dict[str, dict[str, Any]]:
        """All records of one kind, by key."""
        ...

    def try_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take a named lease for ``ttl_s`` seconds unless another owner holds an unexpired one.

        Taking a lease one already holds renews it. Processes sharing a server store use this so
        that at most one of them starts a training job for a namespace.
        """
        ...

    def release_lock(self, name: str, owner: str) -> None:
        """Give a lease back (only if ``owner`` holds it)."""
        ...

    def close(self) -> None:
        """Release files, locks and connections. Idempotent."""
        ...
