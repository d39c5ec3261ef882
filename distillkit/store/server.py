"""The shared store: a Qdrant server or cluster through qdrant-client, for many processes.

Two collections:

* ``<collection>``: the captured points (cosine, ``embedder.dim``), with the same payload layout
  as the embedded store (including the private ``_indexed`` mirror).
* ``<collection>_records``: companion records, one point each with a 1-d dummy vector and a
  deterministic id (uuid5 of kind and key), payload ``{kind, key, value}``. Two reserved kinds
  live there too: ``_meta`` (which embedder built the collection) and ``_lock`` (leases).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from qdrant_client import QdrantClient, models

from distillkit.store._payload import (
    INDEXED_MIRROR,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    TENANT_FIELD,
    check_vector,
    mismatch_error,
    plain_vector,
    public_payload,
    stored_payload,
    translate_errors,
)
from distillkit.store.base import EmbedderInfo, Hit, Point, SearchQuery, Vector

if TYPE_CHECKING:
    from qdrant_client.http.models import Filter

__all__ = ["ServerStore"]

_NAMESPACE = uuid.UUID("5b0c1d8e-6f43-4c55-9a0e-2b7f2c3d9e10")  # fixed: record ids must be stable
_META = "_meta"
_LOCK = "_lock"


def _record_id(kind: str, key: str) -> str:
    # A separator that cannot appear at the end of a kind keeps ("a", "b/c") apart from ("a/b", "c").
    return str(uuid.uuid5(_NAMESPACE, f"{len(kind)}:{kind}/{key}"))


def _check_kind(kind: str) -> None:
    if not kind or kind.startswith("_"):
        raise ValueError(f"record kinds starting with '_' are reserved for the store: {kind!r}")


class ServerStore:
    """Captured points and companion records in a Qdrant server shared by many processes.

    Args:
        embedder: the embedder whose vectors the store holds; checked against the collection.
        url: the server's URL (``QDRANT_URL``); ignored when ``client`` is given.
        api_key: the server's API key (``QDRANT_API_KEY``); never logged nor put in errors.
        client: an existing client, e.g. ``QdrantClient(location=":memory:")`` or local mode
            (``path=``) in tests. The caller keeps ownership: :meth:`close` does not close it.
        collection: the points collection; records go to ``<collection>_records``.

    Raises:
        EmbedderMismatchError: the collection was built with another embedder.
        StoreError: the server is unreachable or refused a request.

    Example:
        >>> info = EmbedderInfo("wordllama-256", 256)
        >>> store = ServerStore(info, url="http://qdrant:6333")  # doctest: +SKIP
    """

    def __init__(
        self,
        embedder: EmbedderInfo,
        *,
        url: str | None = None,
        api_key: str | None = None,
        client: QdrantClient | None = None,
        collection: str = "distillkit",
    ) -> None:
        if client is None and url is None:
            raise ValueError("ServerStore needs a url or a client")
        self.embedder = embedder
        self.collection = collection
        self.records_collection = f"{collection}_records"
        self._owns_client = client is None
        self._closed = False
        if client is None:
            with translate_errors("create a client"):
                client = QdrantClient(url=url, api_key=api_key)
        self._client = client
        # Local mode (":memory:" or path=) is plain Python without locking of its own, and has
        # no payload indexes; a real server handles concurrent requests itself.
        self._local = _is_local(client)
        self._guard: AbstractContextManager[Any] = threading.RLock() if self._local else nullcontext()
        with self._guard, translate_errors("open the collections"):
            self._ensure_collections()
        self._check_embedder()

    # -- opening ----------------------------------------------------------------------------

    def _ensure_collections(self) -> None:
        c = self._client
        if not c.collection_exists(self.collection):
            self._create(
                self.collection,
                models.VectorParams(size=self.embedder.dim, distance=models.Distance.COSINE),
            )
        if not self._local:
            # Idempotent on the server; local mode only warns that indexes do nothing there.
            for name, schema in payload_indexes().items():
                c.create_payload_index(self.collection, name, schema)
        if not c.collection_exists(self.records_collection):
            self._create(self.records_collection, models.VectorParams(size=1, distance=models.Distance.DOT))
            if not self._local:
                c.create_payload_index(self.records_collection, "kind", models.PayloadSchemaType.KEYWORD)

    def _create(self, name: str, vectors: models.VectorParams) -> None:
        try:
            self._client.create_collection(name, vectors_config=vectors)
        except Exception:
            # Another process may have created it between our check and our create.
            if not self._client.collection_exists(name):
                raise

    def _check_embedder(self) -> None:
        meta = {"name": self.embedder.name, "dim": self.embedder.dim}
        point = models.PointStruct(
            id=_record_id(_META, "embedder"),
            vector=[1.0],
            payload={"kind": _META, "key": "embedder", "value": meta},
        )
        with self._guard, translate_errors("read the collection's embedder"):
            # Insert-only: the first process to open the collection records its embedder,
            # later ones (even racing ones) read that record back and compare.
            self._client.upsert(self.records_collection, [point], update_mode=models.UpdateMode.INSERT_ONLY)
            stored = self._get(_META, "embedder")
        info: EmbedderInfo | None = None
        if stored is not None:
            info = EmbedderInfo(str(stored["name"]), int(stored["dim"]))
        else:
            # A collection made by something else: its vector size is all there is to compare.
            with self._guard, translate_errors("read the collection's configuration"):
                params = self._client.get_collection(self.collection).config.params.vectors
            if isinstance(params, models.VectorParams) and params.size != self.embedder.dim:
                info = EmbedderInfo("unknown", params.size)
        if info is not None and info != self.embedder:
            raise mismatch_error(info, self.embedder, f"The Qdrant collection {self.collection!r}")

    # -- points -----------------------------------------------------------------------------

    def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points (vectors required)."""
        if not points:
            return
        structs = [
            models.PointStruct(
                id=str(uuid.UUID(p.id)),
                vector=check_vector(p.vector, self.embedder.dim),
                payload=stored_payload(p.payload, whole=True),
            )
            for p in points
        ]
        with self._guard, translate_errors("upsert points"):
            self._client.upsert(self.collection, structs, wait=True)

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
            timeout: unused: a server builds its index in its own threads, never holding a search.
        """
        query = check_vector(vector, self.embedder.dim)
        flt = _filter(namespace=namespace, fingerprint=fingerprint, indexed=indexed)
        with self._guard, translate_errors("search"):
            result = self._client.query_points(
                self.collection,
                query=query,
                query_filter=flt,
                limit=limit,
                with_payload=True if fields is None else list(fields),
            )
        return [Hit(str(p.id), float(p.score), public_payload(p.payload)) for p in result.points]

    def search_batch(
        self, queries: Sequence[SearchQuery], *, limit: int = 1, fields: Sequence[str] | None = None
    ) -> list[list[Hit]]:
        """:meth:`search` for each query, in one request to the server; results in order."""
        if not queries:
            return []
        requests = [
            models.QueryRequest(
                query=check_vector(q.vector, self.embedder.dim),
                filter=_filter(namespace=q.namespace, fingerprint=q.fingerprint, indexed=q.indexed),
                limit=limit,
                with_payload=True if fields is None else list(fields),
            )
            for q in queries
        ]
        with self._guard, translate_errors("search"):
            results = self._client.query_batch_points(self.collection, requests=requests)
        return [[Hit(str(p.id), float(p.score), public_payload(p.payload)) for p in r.points] for r in results]

    def set_payload(self, ids: Sequence[str], values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the payload of exactly these points (other fields kept)."""
        if not ids or not values:
            return
        payload = stored_payload(values)
        point_ids: list[Any] = [str(uuid.UUID(i)) for i in ids]
        with self._guard, translate_errors("set payload"):
            self._client.set_payload(self.collection, payload=payload, points=point_ids, wait=True)

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        """The points with these ids (payload, and vectors when asked); missing ids are skipped."""
        if not ids:
            return []
        point_ids: list[Any] = [str(uuid.UUID(i)) for i in ids]
        with self._guard, translate_errors("retrieve points"):
            records = self._client.retrieve(self.collection, point_ids, with_payload=True, with_vectors=with_vectors)
        return [
            Point(str(r.id), public_payload(r.payload), plain_vector(r.vector) if with_vectors else None)
            for r in records
        ]

    def scroll(
        self, *, namespace: str | None = None, indexed: bool | None = None, batch_size: int = 256
    ) -> Iterator[Point]:
        """Every point matching the filter, page after page (payload only)."""
        flt = _filter(namespace=namespace, indexed=indexed)
        offset: Any = None
        while True:
            with self._guard, translate_errors("scroll points"):
                records, offset = self._client.scroll(
                    self.collection, scroll_filter=flt, limit=batch_size, offset=offset, with_payload=True
                )
            for r in records:
                yield Point(str(r.id), public_payload(r.payload))
            if offset is None:
                return

    def count(self, *, namespace: str | None = None, indexed: bool | None = None) -> int:
        """How many points match the filter (exact)."""
        flt = _filter(namespace=namespace, indexed=indexed)
        with self._guard, translate_errors("count points"):
            return int(self._client.count(self.collection, count_filter=flt, exact=True).count)

    # -- companion records ------------------------------------------------------------------

    def _get(self, kind: str, key: str) -> dict[str, Any] | None:
        records = self._client.retrieve(self.records_collection, [_record_id(kind, key)], with_payload=True)
        return dict((records[0].payload or {}).get("value") or {}) if records else None

    def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        """A companion record, or None."""
        _check_kind(kind)
        with self._guard, translate_errors("read a record"):
            return self._get(kind, key)

    def put_record(self, kind: str, key: str, value: Mapping[str, Any]) -> None:
        """Create or replace a companion record (JSON-serialisable values)."""
        _check_kind(kind)
        point = models.PointStruct(
            id=_record_id(kind, key), vector=[1.0], payload={"kind": kind, "key": key, "value": dict(value)}
        )
        with self._guard, translate_errors("write a record"):
            self._client.upsert(self.records_collection, [point], wait=True)

    def delete_record(self, kind: str, key: str) -> None:
        """Remove a companion record; a missing one is not an error."""
        _check_kind(kind)
        selector = models.PointIdsList(points=[_record_id(kind, key)])
        with self._guard, translate_errors("delete a record"):
            self._client.delete(self.records_collection, points_selector=selector, wait=True)

    def list_records(self, kind: str) -> dict[str, dict[str, Any]]:
        """All records of one kind, by key."""
        _check_kind(kind)
        flt = models.Filter(must=[_match("kind", kind)])
        out: dict[str, dict[str, Any]] = {}
        offset: Any = None
        while True:
            with self._guard, translate_errors("list records"):
                records, offset = self._client.scroll(
                    self.records_collection, scroll_filter=flt, limit=256, offset=offset, with_payload=True
                )
            for r in records:
                payload = r.payload or {}
                out[str(payload["key"])] = dict(payload.get("value") or {})
            if offset is None:
                return out

    # -- leases -----------------------------------------------------------------------------

    def try_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take (or renew) a named lease unless another owner holds an unexpired one.

        Safe across processes sharing the server: the lease is one point written with a
        conditional upsert (``update_filter``, Qdrant >= 1.16): the server inserts it when it is
        missing, and replaces it only when its owner is ``owner`` or it has expired, as one
        atomic step per point. Two racing processes cannot both win: the second one's write
        finds the first one's lease and is skipped. The write is then read back, with a fresh
        token, to learn whether it was applied.

        Expiry compares wall-clock times (``time.time()``) written by different machines, so
        clock skew between them shortens or lengthens a lease by that much; use a ``ttl_s``
        much larger than the skew. A holder that outlives its ``ttl_s`` without renewing may
        lose the lease to another owner.
        """
        now = time.time()
        token = uuid.uuid4().hex
        point = models.PointStruct(
            id=_record_id(_LOCK, name),
            vector=[1.0],
            payload={
                "kind": _LOCK,
                "key": name,
                "value": {"owner": owner, "expires_at": now + ttl_s},
                "owner": owner,
                "expires_at": now + ttl_s,
                "token": token,
            },
        )
        takeable = models.Filter(
            should=[
                _match("owner", owner),
                models.FieldCondition(key="expires_at", range=models.Range(lt=now)),
            ]
        )
        with self._guard, translate_errors("take a lease"):
            self._client.upsert(self.records_collection, [point], update_filter=takeable, wait=True)
            records = self._client.retrieve(self.records_collection, [point.id], with_payload=True)
        return bool(records) and (records[0].payload or {}).get("token") == token

    def release_lock(self, name: str, owner: str) -> None:
        """Give a lease back (only if ``owner`` holds it): one conditional delete on the server."""
        selector = models.FilterSelector(
            filter=models.Filter(
                must=[
                    models.HasIdCondition(has_id=[_record_id(_LOCK, name)]),
                    _match("kind", _LOCK),
                    _match("owner", owner),
                ]
            )
        )
        with self._guard, translate_errors("release a lease"):
            self._client.delete(self.records_collection, points_selector=selector, wait=True)

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the client if this store created it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            with self._guard, translate_errors("close the client"):
                self._client.close()

    def __enter__(self) -> ServerStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        # Deliberately no URL or key: the URL may embed credentials.
        return f"ServerStore({self.embedder!r}, collection={self.collection!r})"


def _is_local(client: QdrantClient) -> bool:
    try:
        from qdrant_client.local.qdrant_local import QdrantLocal
    except ImportError:  # pragma: no cover - layout of qdrant-client changed
        return False
    return isinstance(getattr(client, "_client", None), QdrantLocal)


def payload_indexes() -> dict[str, models.PayloadSchemaType | models.KeywordIndexParams]:
    """The payload indexes of the points collection, by field.

    ``namespace`` is a tenant index (Qdrant's multitenancy setup): every search filters on it, and
    the server then keeps each namespace's points together on disk and plans filtered searches per
    namespace. Checked against qdrant-client's models only: no Qdrant server runs where this was
    written.
    """
    indexes: dict[str, models.PayloadSchemaType | models.KeywordIndexParams] = {
        name: models.PayloadSchemaType.KEYWORD for name in KEYWORD_FIELDS
    }
    indexes.update({name: models.PayloadSchemaType.INTEGER for name in INTEGER_FIELDS})
    indexes[TENANT_FIELD] = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
    return indexes


def _match(key: str, value: str | int) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _filter(
    *, namespace: str | None = None, fingerprint: str | None = None, indexed: bool | None = None
) -> Filter | None:
    must: list[Any] = []
    if namespace is not None:
        must.append(_match("namespace", namespace))
    if fingerprint is not None:
        must.append(_match("fingerprint", fingerprint))
    if indexed is not None:
        must.append(_match(INDEXED_MIRROR, 1 if indexed else 0))
    return models.Filter(must=must) if must else None
