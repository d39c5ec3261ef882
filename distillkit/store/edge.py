"""The embedded store: a Qdrant Edge shard in a local folder, owned by one process.

Layout of ``<path>/<collection>/`` (folders 0o700, the files written here 0o600)::

    manifest.json   which embedder (name, dim) made the vectors
    records.sqlite  the companion records (kind, key → JSON), SQLite in WAL mode
    shard/          the qdrant-edge shard (segments and its write-ahead log)

The shard runs in a child process of the application's (:mod:`distillkit.store._engine`): the
engine holds the GIL for the whole of each call, and an index build takes seconds, which would
stall every thread of the application. The child builds the index after
``optimize_every`` new points; meanwhile a routing lookup waits at most its timeout and the
teacher answers (:class:`~distillkit.errors.StoreBusyError`), captures wait.

The shard keeps a write-ahead log, so an upsert is durable once it returns, even if the process
dies without :meth:`EdgeStore.close`. The folder is locked by the application's process (and the
WAL by the engine's): a second process (or a second ``EdgeStore`` in this one) opening the folder
gets :class:`StoreLockedError`.

Companion records (jobs, the registry, leases' neighbours) live in SQLite beside the shard, under
their own lock (:mod:`distillkit.store.companion`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from distillkit.config import EdgeEngine
from distillkit.errors import StoreError, StoreLockedError
from distillkit.store._engine import Engine, open_engine
from distillkit.store._files import (
    check_manifest,
    folder_identity,
    lock_folder,
    make_private_dir,
    write_manifest,
)
from distillkit.store._payload import check_vector, stored_payload, translate_errors
from distillkit.store._shard import WalLockedError
from distillkit.store.base import EmbedderInfo, Hit, Point, SearchQuery, Vector
from distillkit.store.companion import CompanionRecords

__all__ = ["EdgeStore"]

#: Engine objects a forked child abandoned: never dropped, so that nothing of the parent's shard
#: is flushed or unlocked from the child (see :meth:`EdgeStore.abandon`).
_ABANDONED: list[Any] = []

_LOCKED_HINT = (
    "An embedded store folder belongs to one process; to share captured data between several "
    "processes, run a Qdrant server and set QDRANT_URL (and QDRANT_API_KEY)."
)


class EdgeStore:
    """Captured points and companion records in a local folder, on Qdrant Edge (HNSW, cosine).

    Safe to share between threads: the engine serves one call at a time, in order.

    Args:
        path: the store folder (created with owner-only permissions).
        embedder: the embedder whose vectors the store holds; checked against the folder's manifest.
        collection: name of the sub-folder, so several collections can share one store folder.
        optimize_every: build the HNSW index once this many points are not yet indexed (checked
            after each upsert; about 2 to 4 s per 20k points on 2 cores, in the engine's process).
            None leaves indexing to explicit :meth:`optimize` calls; unindexed points are still
            found, by a filtered full scan.
        engine: ``"process"`` (the default, on POSIX): the shard in a child process, so index
            builds never hold this process's GIL; ``"inline"``: in this process (every build
            stalls it), where a child process cannot be started (``sys.executable`` is not a
            Python, as under some embedded servers).

    Raises:
        StoreLockedError: the folder is open in another process (or another ``EdgeStore``).
        EmbedderMismatchError: the folder was built with another embedder.
        StoreError: the folder cannot be created or read.

    Example:
        >>> store = EdgeStore(".distillkit", EmbedderInfo("wordllama-256", 256))  # doctest: +SKIP
        >>> store.search(vec, namespace="support", indexed=True, limit=1)  # doctest: +SKIP
    """

    #: Points per engine call of an upsert (a quarter of that per call of a batch search): a
    #: routing lookup waits for at most one such call in flight (a few ms) before its turn.
    CHUNK = 32

    def __init__(
        self,
        path: str | os.PathLike[str],
        embedder: EmbedderInfo,
        *,
        collection: str = "distillkit",
        optimize_every: int | None = 20_000,
        engine: EdgeEngine = "process",
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
        self._engine: Engine | None = None
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
                self._engine = self._open_engine(engine)
                write_manifest(self._dir, self.embedder)
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

    def _open_engine(self, kind: EdgeEngine) -> Engine:
        try:
            return open_engine(kind, str(self._dir / "shard"), self.embedder.dim)
        except WalLockedError as exc:
            raise self._locked_error() from exc

    def _require_engine(self) -> Engine:
        if self._engine is None:
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
        return self._engine

    @property
    def engine(self) -> str:
        """Where the shard runs: ``"process"`` or ``"inline"`` (see the class's arguments)."""
        return self._require_engine().kind

    @property
    def indexing(self) -> bool:
        """True while an index build this store started may still run (until its end is read)."""
        return self._require_engine().building

    @property
    def engine_pid(self) -> int | None:
        """The process id of the engine's child process (None when it runs inline)."""
        return self._require_engine().pid

    # -- points -----------------------------------------------------------------------------

    def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points (vectors required); durable once this returns (WAL)."""
        if not points:
            return
        dim = self.embedder.dim
        rows = [(p.id, check_vector(p.vector, dim), stored_payload(p.payload, whole=True)) for p in points]
        with self._lock, translate_errors("upsert points"):
            engine = self._require_engine()
            for start in range(0, len(rows), self.CHUNK):
                unindexed = engine.call("upsert", rows[start : start + self.CHUNK])
            if self.optimize_every is not None and unindexed >= self.optimize_every:
                engine.start_optimize()

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
        """Nearest points by cosine similarity (1.0 = same direction), best first.

        Args:
            vector: the query embedding.
            namespace: only points of this namespace.
            fingerprint: only points with this task fingerprint, when given.
            indexed: only points whose ``indexed`` tag is this, when given.
            limit: at most this many hits.
            fields: the payload fields to return (None: all). Reading and converting only what the
                caller uses keeps a search cheap when payloads hold long conversations.
            timeout: seconds to wait at most while the engine builds its index (a routing
                lookup); None waits.

        Raises:
            StoreBusyError: ``timeout`` passed while the engine was building its index.
        """
        args = (
            check_vector(vector, self.embedder.dim),
            namespace,
            fingerprint,
            indexed,
            limit,
            None if fields is None else list(fields),
        )
        with translate_errors("search"):
            found = self._require_engine().call("search", *args, timeout=timeout)
        return [Hit(*row) for row in found]

    def search_batch(
        self, queries: Sequence[SearchQuery], *, limit: int = 1, fields: Sequence[str] | None = None
    ) -> list[list[Hit]]:
        """:meth:`search` for each query, in order: a planned batch per engine call of ``CHUNK // 4``."""
        if not queries:
            return []
        dim = self.embedder.dim
        rows = [(check_vector(q.vector, dim), q.namespace, q.fingerprint, q.indexed) for q in queries]
        wanted = None if fields is None else list(fields)
        found: list[Any] = []
        with translate_errors("search"):
            engine = self._require_engine()
            for start in range(0, len(rows), self.CHUNK // 4):
                found.extend(engine.call("search_batch", rows[start : start + self.CHUNK // 4], limit, wanted))
        return [[Hit(*row) for row in hits] for hits in found]

    def set_payload(self, ids: Sequence[str], values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the payload of exactly these points (other fields kept)."""
        if not ids or not values:
            return
        with self._lock, translate_errors("set payload"):
            self._require_engine().call("set_payload", list(ids), stored_payload(values))

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        """The points with these ids (payload, and vectors when asked); missing ids are skipped."""
        if not ids:
            return []
        with self._lock, translate_errors("retrieve points"):
            rows = self._require_engine().call("retrieve", list(ids), with_vectors)
        return [Point(*row) for row in rows]

    def scroll(
        self, *, namespace: str | None = None, indexed: bool | None = None, batch_size: int = 256
    ) -> Iterator[Point]:
        """Every point matching the filter, page after page (payload only).

        The lock is held for one page at a time, so a long scan does not stall searches.
        """
        offset: Any = None
        while True:
            with self._lock, translate_errors("scroll points"):
                rows, offset = self._require_engine().call("scroll", namespace, indexed, offset, batch_size)
            for point_id, payload in rows:
                yield Point(point_id, payload)
            if offset is None:
                return

    def count(self, *, namespace: str | None = None, indexed: bool | None = None) -> int:
        """How many points match the filter (exact)."""
        with self._lock, translate_errors("count points"):
            return int(self._require_engine().call("count", namespace, indexed))

    def optimize(self, *, wait: bool = True) -> bool:
        """Build the HNSW index for points not yet indexed.

        Args:
            wait: block until it is built; False returns at once where the engine runs in its
                own process (routing lookups meanwhile wait at most their timeout).

        Returns:
            True if anything was (re)indexed (False when not waited for).
        """
        with self._lock, translate_errors("optimize the index"):
            engine = self._require_engine()
            if not wait:
                engine.start_optimize()
                return False
            return bool(engine.call("optimize"))

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
        """Flush and close the shard (after an index build that runs), releasing the folder lock. Idempotent."""
        with self._lock:
            self._leases.clear()
            if self._engine is None:
                return
            self._records.close()  # before the shard is let go: no record call passes in between
            engine, self._engine = self._engine, None
            try:
                with translate_errors("close the store"):
                    engine.close()
            finally:
                self._unlock_folder()

    def abandon(self) -> None:
        """In a forked child: let go of the parent's store without touching it.

        The child's copy of the folder lock is closed (the parent keeps its lock); the engine
        (in this process, or the connection to its process) is kept referenced for ever, so that
        it is never flushed, closed or dropped here.
        """
        engine, self._engine = self._engine, None
        db = self._records.detach()
        self._leases.clear()
        if engine is not None:
            _ABANDONED.append(engine.abandon())
        if db is not None:
            _ABANDONED.append(db)  # closing SQLite's parent connection in a child could checkpoint its WAL
        self._unlock_folder()

    def __enter__(self) -> EdgeStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EdgeStore({str(self.path)!r}, {self.embedder!r}, collection={self.collection!r})"
