"""The embedded store: a Qdrant Edge shard in a local folder, owned by one process.

Layout of ``<path>/<collection>/`` (folders 0o700, the files written here 0o600)::

    manifest.json   which embedder (name, dim) made the vectors
    records.sqlite  the companion records (kind, key → JSON), SQLite in WAL mode
    shard/          the qdrant-edge shard (segments and its write-ahead log)

The shard keeps a write-ahead log, so an upsert is durable once it returns, even if the process
dies without :meth:`EdgeStore.close`. The WAL is also the engine's folder lock: a second process
(or a second ``EdgeStore`` in this one) opening the folder gets :class:`StoreLockedError`.

Companion records (jobs, the registry, leases' neighbours) live in SQLite beside the shard, under
their own lock (:mod:`distillkit.store.companion`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from distillkit.errors import StoreError, StoreLockedError
from distillkit.store._files import (
    check_manifest,
    folder_identity,
    lock_folder,
    make_private_dir,
    write_manifest,
)
from distillkit.store._payload import (
    INDEXED_MIRROR,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    check_vector,
    plain_vector,
    public_payload,
    stored_payload,
    translate_errors,
)
from distillkit.store.base import EmbedderInfo, Hit, Point, Vector
from distillkit.store.companion import CompanionRecords

__all__ = ["EdgeStore"]

#: Engine objects a forked child abandoned: never dropped, so that nothing of the parent's shard
#: is flushed or unlocked from the child (see :meth:`EdgeStore.abandon`).
_ABANDONED: list[Any] = []

_LOCKED_HINT = (
    "An embedded store folder belongs to one process; to share captured data between several "
    "processes, run a Qdrant server and set QDRANT_URL (and QDRANT_API_KEY)."
)


def _is_wal_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return "WAL" in text and ("WouldBlock" in text or "lock" in text.lower())


class EdgeStore:
    """Captured points and companion records in a local folder, on Qdrant Edge (HNSW, cosine).

    Safe to share between threads: every engine call and record change runs under one lock.
    The engine's Python binding holds the GIL for each call anyway, so finer locking would buy
    no parallelism.

    Args:
        path: the store folder (created with owner-only permissions).
        embedder: the embedder whose vectors the store holds; checked against the folder's manifest.
        collection: name of the sub-folder, so several collections can share one store folder.
        optimize_every: build the HNSW index once this many points are not yet indexed (checked
            after each upsert). The engine holds the GIL while it indexes (about 2 to 4 s per
            20k 256-d points on 2 cores), so this bounds how long one stall lasts. None leaves
            indexing to explicit :meth:`optimize` calls; unindexed points are still found, by a
            filtered full scan.

    Raises:
        StoreLockedError: the folder is open in another process (or another ``EdgeStore``).
        EmbedderMismatchError: the folder was built with another embedder.
        StoreError: the folder cannot be created or read.

    Example:
        >>> store = EdgeStore(".distillkit", EmbedderInfo("wordllama-256", 256))  # doctest: +SKIP
        >>> store.search(vec, namespace="support", indexed=True, limit=1)  # doctest: +SKIP
    """

    #: HNSW settings: Qdrant's defaults. full_scan_threshold (KB) makes small filtered subsets
    #: use the payload index plus a brute-force scan, which is exact and fast.
    HNSW_M = 16
    HNSW_EF_CONSTRUCT = 100
    HNSW_FULL_SCAN_KB = 10_000
    #: Keep up to this many segments, so that indexing new points does not re-index (merge) old
    #: ones: measured 3.8 s per 20k new points, against stalls growing to 11 s at 100k with merges.
    SEGMENTS = 8

    def __init__(
        self,
        path: str | os.PathLike[str],
        embedder: EmbedderInfo,
        *,
        collection: str = "distillkit",
        optimize_every: int | None = 20_000,
    ) -> None:
        if not collection or "/" in collection or collection.startswith("."):
            raise ValueError(f"invalid collection name: {collection!r}")
        self.embedder = embedder
        self.path = Path(path)
        self.collection = collection
        self.optimize_every = optimize_every
        self._dir = self.path / collection
        self._lock = threading.RLock()
        #: Record reads and writes never take ``_lock``.
        self._records = CompanionRecords(self._dir)
        self._leases: dict[str, tuple[str, float]] = {}
        self._shard: qe.EdgeShard | None = None
        self._lock_fd: int | None = None
        try:
            with translate_errors(f"open the store folder {self._dir}"):
                make_private_dir(self.path)
                make_private_dir(self._dir)
                # The folder's own lock is taken before anything in it is created or read, so that
                # of several processes opening a new folder at once exactly one owns it and the
                # others get StoreLockedError (the engine's WAL lock comes too late for that).
                self._lock_fd = self._lock_folder()
                self._identity = folder_identity(self._dir)
                check_manifest(self._dir, self.embedder)
                self._records.open()
                self._shard = self._open_shard()
                write_manifest(self._dir, self.embedder)
                self._ensure_indexes()
        except BaseException:
            self._records.close()
            self._unlock_folder()
            raise

    # -- opening ----------------------------------------------------------------------------

    def _locked_error(self) -> StoreLockedError:
        return StoreLockedError(
            f"The store folder {self._dir} is already open in another process (or by another EdgeStore in this one).",
            fix=_LOCKED_HINT,
        )

    def _lock_folder(self) -> int | None:
        try:
            return lock_folder(self._dir)
        except BlockingIOError:
            raise self._locked_error() from None

    def _unlock_folder(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the last descriptor of the lock releases it

    def _open_shard(self) -> qe.EdgeShard:
        shard_dir = self._dir / "shard"
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=self.embedder.dim, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(
                m=self.HNSW_M, ef_construct=self.HNSW_EF_CONSTRUCT, full_scan_threshold=self.HNSW_FULL_SCAN_KB
            ),
            optimizers=qe.EdgeOptimizersConfig(default_segment_number=self.SEGMENTS),
        )
        try:
            if (shard_dir / "edge_config.json").exists():
                return qe.EdgeShard.load(str(shard_dir), config)
            shard = qe.EdgeShard.create(str(shard_dir), config)
        except Exception as exc:
            if _is_wal_lock_error(exc):
                raise self._locked_error() from exc
            raise
        os.chmod(shard_dir, 0o700)
        return shard

    def _ensure_indexes(self) -> None:
        shard = self._require_shard()
        schema = shard.info().payload_schema
        for name in KEYWORD_FIELDS:
            if name not in schema:
                shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
        for name in INTEGER_FIELDS:
            if name not in schema:
                shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Integer))

    def _require_shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise StoreError(f"The store at {self._dir} is closed.")
        # An open shard keeps writing into a deleted folder's files without any error, and the
        # data is gone: a folder removed or replaced under us is a failure (one stat per call).
        try:
            same = folder_identity(self._dir) == self._identity
        except OSError:
            same = False
        if not same:
            raise StoreError(
                f"The store folder {self._dir} was removed or replaced while open.",
                fix="Keep the folder in place while distillkit runs; it is reopened (created again) on retry.",
            )
        return self._shard

    # -- points -----------------------------------------------------------------------------

    def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points (vectors required); durable once this returns (WAL)."""
        if not points:
            return
        edge_points = [
            qe.Point(
                str(uuid.UUID(p.id)),
                check_vector(p.vector, self.embedder.dim),
                stored_payload(p.payload, whole=True),
            )
            for p in points
        ]
        with self._lock, translate_errors("upsert points"):
            shard = self._require_shard()
            shard.update(qe.UpdateOperation.upsert_points(edge_points))
            if self.optimize_every is not None:
                info = shard.info()
                if info.points_count - info.indexed_vectors_count >= self.optimize_every:
                    shard.optimize()

    def search(
        self,
        vector: Vector,
        *,
        namespace: str,
        fingerprint: str | None = None,
        indexed: bool | None = None,
        limit: int = 1,
        fields: Sequence[str] | None = None,
    ) -> list[Hit]:
        """Nearest points by cosine similarity (1.0 = same direction), best first.

        Args:
            vector: the query embedding.
            namespace: only points of this namespace.
            fingerprint: only points with this task fingerprint, when given.
            indexed: only points whose ``indexed`` tag is this, when given.
            limit: at most this many hits.
            fields: the payload fields to return (None: all). Reading and converting only what the
                caller uses keeps a search cheap when payloads hold long conversations.
        """
        query = qe.QueryRequest(
            query=qe.Query.Nearest(check_vector(vector, self.embedder.dim)),
            limit=limit,
            filter=_filter(namespace=namespace, fingerprint=fingerprint, indexed=indexed),
            with_payload=True if fields is None else list(fields),
        )
        with self._lock, translate_errors("search"):
            scored = self._require_shard().query(query)
        return [Hit(str(p.id), float(p.score), public_payload(p.payload)) for p in scored]

    def set_payload(self, ids: Sequence[str], values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the payload of exactly these points (other fields kept)."""
        if not ids or not values:
            return
        op = qe.UpdateOperation.set_payload([str(uuid.UUID(i)) for i in ids], stored_payload(values))
        with self._lock, translate_errors("set payload"):
            self._require_shard().update(op)

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        """The points with these ids (payload, and vectors when asked); missing ids are skipped."""
        if not ids:
            return []
        point_ids: list[Any] = [str(uuid.UUID(i)) for i in ids]
        with self._lock, translate_errors("retrieve points"):
            records = self._require_shard().retrieve(point_ids, True, with_vectors)
        return [
            Point(str(r.id), public_payload(r.payload), plain_vector(r.vector) if with_vectors else None)
            for r in records
        ]

    def scroll(
        self, *, namespace: str | None = None, indexed: bool | None = None, batch_size: int = 256
    ) -> Iterator[Point]:
        """Every point matching the filter, page after page (payload only).

        The lock is held for one page at a time, so a long scan does not stall searches.
        """
        flt = _filter(namespace=namespace, indexed=indexed)
        offset: Any = None
        while True:
            request = qe.ScrollRequest(offset=offset, limit=batch_size, filter=flt, with_payload=True)
            with self._lock, translate_errors("scroll points"):
                records, offset = self._require_shard().scroll(request)
            for r in records:
                yield Point(str(r.id), public_payload(r.payload))
            if offset is None:
                return

    def count(self, *, namespace: str | None = None, indexed: bool | None = None) -> int:
        """How many points match the filter (exact)."""
        request = qe.CountRequest(exact=True, filter=_filter(namespace=namespace, indexed=indexed))
        with self._lock, translate_errors("count points"):
            return int(self._require_shard().count(request))

    def optimize(self) -> bool:
        """Build the HNSW index for points not yet indexed; blocks (and holds the GIL) meanwhile.

        Returns:
            True if anything was (re)indexed.
        """
        with self._lock, translate_errors("optimize the index"):
            return bool(self._require_shard().optimize())

    # -- companion records ------------------------------------------------------------------

    def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        """A companion record (a copy), or None."""
        return self._records.get(kind, key)

    def put_record(self, kind: str, key: str, value: Mapping[str, Any]) -> None:
        """Create or replace a companion record; committed to disk before returning."""
        self._records.put(kind, key, value)

    def delete_record(self, kind: str, key: str) -> None:
        """Remove a companion record; a missing one is not an error."""
        self._records.delete(kind, key)

    def list_records(self, kind: str) -> dict[str, dict[str, Any]]:
        """All records of one kind, by key (copies)."""
        return self._records.list(kind)

    # -- leases -----------------------------------------------------------------------------

    def try_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take (or renew) a named lease unless another owner holds an unexpired one.

        In-process only: the folder belongs to one process, so memory is the whole truth.
        Leases do not survive :meth:`close`.
        """
        now = time.monotonic()
        with self._lock:
            held = self._leases.get(name)
            if held is not None and held[0] != owner and held[1] > now:
                return False
            self._leases[name] = (owner, now + ttl_s)
            return True

    def release_lock(self, name: str, owner: str) -> None:
        """Give a lease back (only if ``owner`` holds it)."""
        with self._lock:
            held = self._leases.get(name)
            if held is not None and held[0] == owner:
                del self._leases[name]

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Flush and close the shard, releasing the folder lock. Idempotent."""
        with self._lock:
            self._leases.clear()
            if self._shard is None:
                return
            self._records.close()  # before the shard is let go: no record call passes in between
            shard, self._shard = self._shard, None
            try:
                with translate_errors("close the store"):
                    try:
                        shard.flush()
                    finally:
                        shard.close()
            finally:
                self._unlock_folder()

    def abandon(self) -> None:
        """In a forked child: let go of the parent's store without touching it.

        The child's copy of the folder lock is closed (the parent keeps its lock); the engine
        object is kept referenced for ever, so that it is never flushed, closed or dropped here.
        """
        shard, self._shard = self._shard, None
        db = self._records.detach()
        self._leases.clear()
        if shard is not None:
            _ABANDONED.append(shard)
        if db is not None:
            _ABANDONED.append(db)  # closing SQLite's parent connection in a child could checkpoint its WAL
        self._unlock_folder()

    def __enter__(self) -> EdgeStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EdgeStore({str(self.path)!r}, {self.embedder!r}, collection={self.collection!r})"


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
