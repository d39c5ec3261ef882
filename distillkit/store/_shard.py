"""The qdrant-edge shard behind :class:`~distillkit.store.edge.EdgeStore`: every call made on it.

Plain Python values in and out (tuples, dicts, lists of floats): qdrant-edge's objects do not
pickle, so they exist only here, in whichever process runs the shard (:mod:`distillkit.store._engine`).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from distillkit.store._payload import INDEXED_MIRROR, INTEGER_FIELDS, KEYWORD_FIELDS, plain_vector, public_payload

__all__ = ["Found", "Shard", "WalLockedError"]

#: A found point as the engine returns it: id, score, payload (public fields).
Found = tuple[str, float, dict[str, Any]]


class WalLockedError(Exception):
    """The shard's write-ahead log is locked: another process has the folder open."""


def _is_wal_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return "WAL" in text and ("WouldBlock" in text or "lock" in text.lower())


class Shard:
    """A qdrant-edge shard in ``folder``, and every call distillkit makes on it.

    Args:
        folder: the shard's folder (created with owner-only permissions when new).
        dim: the vectors' dimension.
        segments: the engine's target segment count (see :attr:`SEGMENTS`).

    Raises:
        WalLockedError: another process has the shard open.
    """

    #: HNSW settings: Qdrant's defaults. full_scan_threshold (KB) makes small filtered subsets
    #: use the payload index plus a brute-force scan, which is exact (the veto's few untrained
    #: points: a lower threshold made it 0.3 ms but missed the nearest one in 1-4%).
    HNSW_M = 16
    HNSW_EF_CONSTRUCT = 100
    HNSW_FULL_SCAN_KB = 10_000
    #: Search breadth: at 100k points in one segment, 0.38-0.45 ms for a filtered top 5 with
    #: recall@1 >= 0.997 against an exact search (32: 0.30 ms but 0.993; the default, 0.55 ms).
    HNSW_EF = 64
    #: One segment: every segment is one more graph to search, and the 5-6 that eight allowed made
    #: a search at 100k points 6 ms instead of 0.4. Merging new points into it costs a longer build
    #: (measured in 20k steps: at most 7.8 s each, 31 s for 100k), which runs in the engine's own
    #: process (see the module docstring).
    SEGMENTS = 1

    def __init__(self, folder: str, dim: int) -> None:
        self.dim = dim
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(
                m=self.HNSW_M, ef_construct=self.HNSW_EF_CONSTRUCT, full_scan_threshold=self.HNSW_FULL_SCAN_KB
            ),
            optimizers=qe.EdgeOptimizersConfig(default_segment_number=self.SEGMENTS),
        )
        try:
            if (Path(folder) / "edge_config.json").exists():
                self._shard = qe.EdgeShard.load(folder, config)
            else:
                self._shard = qe.EdgeShard.create(folder, config)
                os.chmod(folder, 0o700)
        except Exception as exc:
            if _is_wal_lock_error(exc):
                raise WalLockedError(str(exc)) from exc
            raise
        schema = self._shard.info().payload_schema
        for name in KEYWORD_FIELDS:
            if name not in schema:
                self._shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
        for name in INTEGER_FIELDS:
            if name not in schema:
                self._shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Integer))

    def upsert(self, rows: list[tuple[str, list[float], dict[str, Any]]]) -> int:
        """Insert or replace points (id, vector, stored payload); returns how many are not indexed yet."""
        points = [qe.Point(str(uuid.UUID(i)), vector, payload) for i, vector, payload in rows]
        self._shard.update(qe.UpdateOperation.upsert_points(points))
        return self.unindexed()

    def search(self, *query: Any) -> list[Found]:
        """The nearest points: ``query`` is (vector, namespace, fingerprint, indexed, limit, fields)."""
        return _found(self._shard.query(_query(*query)))

    def search_batch(
        self,
        queries: list[tuple[list[float], str, str | None, bool | None]],
        limit: int,
        fields: list[str] | None,
    ) -> list[list[Found]]:
        """:meth:`search` for each (vector, namespace, fingerprint, indexed), as one planned batch."""
        batch = qe.QueryBatchRequest([_query(*q, limit, fields) for q in queries])
        return [_found(scored) for scored in self._shard.query_batch(batch)]

    def set_payload(self, ids: list[str], values: dict[str, Any]) -> None:
        self._shard.update(qe.UpdateOperation.set_payload([str(uuid.UUID(i)) for i in ids], values))

    def retrieve(self, ids: list[str], with_vectors: bool) -> list[tuple[str, dict[str, Any], list[float] | None]]:
        records = self._shard.retrieve([str(uuid.UUID(i)) for i in ids], True, with_vectors)
        return [
            (str(r.id), public_payload(r.payload), plain_vector(r.vector) if with_vectors else None) for r in records
        ]

    def scroll(
        self, namespace: str | None, indexed: bool | None, offset: Any, limit: int
    ) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
        """One page of points matching the filter, and the offset of the next (None after the last)."""
        request = qe.ScrollRequest(
            offset=offset, limit=limit, filter=_filter(namespace=namespace, indexed=indexed), with_payload=True
        )
        records, offset = self._shard.scroll(request)
        return [(str(r.id), public_payload(r.payload)) for r in records], offset

    def count(self, namespace: str | None, indexed: bool | None) -> int:
        return int(self._shard.count(qe.CountRequest(exact=True, filter=_filter(namespace=namespace, indexed=indexed))))

    def unindexed(self) -> int:
        """Points stored but not yet in the HNSW index (found by a filtered full scan meanwhile)."""
        info = self._shard.info()
        return int(info.points_count - info.indexed_vectors_count)

    def optimize(self) -> bool:
        """Build the HNSW index for points not yet indexed (merging segments as configured).

        Then flush: the engine deletes the segments a build replaced only on a flush, and without
        it a million points took 20 GB of disk.
        """
        built = bool(self._shard.optimize())
        self._shard.flush()
        return built

    def close(self) -> None:
        """Flush and close; the shard's folder lock is released."""
        try:
            self._shard.flush()
        finally:
            self._shard.close()


_SEARCH = qe.SearchParams(hnsw_ef=Shard.HNSW_EF)


def _query(
    vector: list[float],
    namespace: str,
    fingerprint: str | None,
    indexed: bool | None,
    limit: int,
    fields: list[str] | None,
) -> qe.QueryRequest:
    return qe.QueryRequest(
        query=qe.Query.Nearest(vector),
        limit=limit,
        filter=_filter(namespace=namespace, fingerprint=fingerprint, indexed=indexed),
        with_payload=True if fields is None else fields,
        params=_SEARCH,
    )


def _found(scored: Any) -> list[Found]:
    return [(str(p.id), float(p.score), public_payload(p.payload)) for p in scored]


def _filter(
    *, namespace: str | None = None, fingerprint: str | None = None, indexed: bool | None = None
) -> qe.Filter | None:
    must: list[Any] = []
    if namespace is not None:
        must.append(qe.FieldCondition("namespace", match=qe.MatchValue(namespace)))
    if fingerprint is not None:
        must.append(qe.FieldCondition("fingerprint", match=qe.MatchValue(fingerprint)))
    if indexed is not None:
        must.append(qe.FieldCondition(INDEXED_MIRROR, match=qe.MatchValue(1 if indexed else 0)))
    return qe.Filter(must=must) if must else None
