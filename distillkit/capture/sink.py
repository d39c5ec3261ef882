"""The capture sink: what the writer thread does with a batch of finished teacher calls.

For each call: build the :class:`Interaction`, skip what could never be routed to, apply the
redactor (:mod:`distillkit.capture.redact`), embed what has no vector yet, and store it, unless a
near-duplicate is already stored (then only that point's ``count`` goes up).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from distillkit.capture.redact import Redactor, redact_interaction
from distillkit.errors import StoreError
from distillkit.routing.request import Request, jsonable, request_params
from distillkit.state import NAMESPACE_KIND
from distillkit.store.base import Point, SearchQuery, Store, Vector

if TYPE_CHECKING:
    from distillkit.events import Events
    from distillkit.routing.embedders import Embedder
    from distillkit.stats import Stats
    from distillkit.store.resilient import ResilientStore

__all__ = ["USABLE_FINISH_REASONS", "CaptureSink", "Captured", "Interaction"]

logger = logging.getLogger("distillkit")

#: Finish reasons of an answer worth training on.
USABLE_FINISH_REASONS = frozenset({"stop", "tool_calls"})


@dataclass
class Captured:
    """What the request path hands the capture writer: cheap to make, finished off the hot path."""

    request: Request
    messages: list[Any]
    message: dict[str, Any] | None
    finish_reason: str | None
    usage: Any  # the SDK's usage object, or a dict from a stream; made JSON off the hot path


@dataclass
class Interaction:
    """One finished teacher call, as the sink stores it.

    ``vector`` is the routing embedding when the router computed one; it is reused unless a
    redactor masked the query (then the masked text is embedded again).
    """

    namespace: str
    fingerprint: str
    query: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    response: dict[str, Any]
    teacher_model: str
    finish_reason: str | None
    usage: dict[str, Any] | None = None
    vector: Vector | None = None
    created_at: float = field(default_factory=time.time)
    #: Fields a redactor changed before capture (``"query"``, ``"messages"``, ``"response"``).
    redacted: list[str] = field(default_factory=list)

    @property
    def trainable(self) -> bool:
        """Complete and successful: worth training a student on."""
        return self.finish_reason in USABLE_FINISH_REASONS

    def payload(self) -> dict[str, Any]:
        """The stored payload; ``indexed`` (trained on) starts False."""
        return {
            "namespace": self.namespace,
            "fingerprint": self.fingerprint,
            "query": self.query,
            "messages": self.messages,
            "params": self.params,
            "response": self.response,
            "teacher_model": self.teacher_model,
            "usage": self.usage,
            "created_at": self.created_at,
            "indexed": False,
            "distilled_model": None,
            "job_id": None,
            "count": 1,
            "redacted": list(self.redacted),
        }


class CaptureSink:
    """Stores batches of :class:`Captured` calls; runs on the capture writer's thread.

    Args:
        stores: the Distiller's store handle; a failing store is reported to it.
        embedder: returns the embedder (built on first use).
        stats: counters (captured, deduplicated, skipped, dropped).
        events: ``capture`` and ``drop`` hooks.
        dedup_threshold: a new capture this similar to a stored one of its task only bumps that
            one's ``count``.
        redact: applied to every text field before storing; None stores them as they are.
        after_write: called once a batch is stored (the Distiller saves its counters there).
    """

    def __init__(
        self,
        stores: ResilientStore,
        embedder: Callable[[], Embedder],
        stats: Stats,
        events: Events,
        *,
        dedup_threshold: float,
        redact: Redactor | None = None,
        after_write: Callable[[Store], None] | None = None,
    ) -> None:
        self._stores = stores
        self._embedder = embedder
        self._stats = stats
        self._events = events
        self._threshold = dedup_threshold
        self._redact = redact
        self._after_write = after_write
        # Namespaces already recorded in this store object (a store reopened empty must learn them again).
        self._known: tuple[Store | None, set[str]] = (None, set())

    def dropped(self, item: Captured, reason: str) -> None:
        """Count a lost capture and tell the ``drop`` hooks."""
        self._stats.add(item.request.namespace, dropped=1)
        self._events.emit("drop", item.request.namespace, reason)

    def write(self, batch: Sequence[Captured]) -> None:
        """Store one batch; a StoreError propagates (the writer counts the batch as dropped)."""
        interactions: list[Interaction] = []
        for item in batch:
            request = item.request
            interaction = Interaction(
                namespace=request.namespace,
                fingerprint=request.fingerprint,
                query=request.query,
                messages=jsonable(item.messages),
                params=request_params(request.kwargs),
                response=jsonable(item.message or {}),
                teacher_model=request.teacher_model,
                finish_reason=item.finish_reason,
                usage=jsonable(item.usage),
                vector=request.vector,
            )
            if not interaction.trainable or not interaction.query.strip():
                # No query text (no user message): nothing could ever be routed to it, and an
                # empty text embeds to a vector of NaNs.
                self._stats.add(request.namespace, skipped=1)
            elif self._redact is None or self._redacted(interaction):
                interactions.append(interaction)
            else:
                self.dropped(item, "redaction failed")
        if not interactions:
            return
        missing = [i for i in interactions if i.vector is None]
        if missing:
            # The query as it is stored (masked, when the redactor changed it).
            vectors = self._embedder().embed([i.query for i in missing])
            for interaction, vector in zip(missing, vectors, strict=True):
                interaction.vector = vector
        finite = []
        for interaction in interactions:
            if np.isfinite(np.asarray(interaction.vector, dtype=np.float32)).all():
                finite.append(interaction)
            else:  # never store a vector that no search can compare with
                logger.warning("distillkit: the embedder returned a non-finite vector; the capture is skipped")
                self._stats.add(interaction.namespace, skipped=1)
        if not finite:
            return
        store = self._stores.get()  # raises StoreError while it is away: the batch is dropped and counted
        try:
            self._store(store, finite)
        except StoreError as exc:
            self._stores.failed(exc, store)
            raise  # the writer logs it and counts the batch as dropped
        if self._after_write is not None:
            self._after_write(store)

    def _redacted(self, interaction: Interaction) -> bool:
        """Apply the redactor in place; False (logged) when it raised."""
        assert self._redact is not None
        try:
            query, messages, response, changed = redact_interaction(
                self._redact, interaction.query, interaction.messages, interaction.response
            )
        except Exception as exc:
            logger.warning("distillkit: the redact hook failed (%s); the capture is dropped", type(exc).__name__)
            return False
        # The query text is the last user message: kept in step with the redacted messages.
        interaction.query, interaction.messages, interaction.response = query, messages, response
        interaction.redacted = changed
        if "query" in changed:
            # Embedded again from the masked text by write(): a vector can be inverted into
            # something close to the words it came from, so none is kept from the original.
            interaction.vector = None
        return True

    def _store(self, store: Store, interactions: Sequence[Interaction]) -> None:
        """Insert new points; a near-duplicate of a stored one only bumps that one's ``count``.

        Near-duplicates within the batch are found with one matrix product per (namespace, task),
        those of stored points with one :meth:`~distillkit.store.base.Store.search_batch`.
        """
        threshold = self._threshold
        fresh = self._unique_within(interactions, threshold)
        found = store.search_batch(
            [SearchQuery(vector, i.namespace, i.fingerprint) for i, vector, _ in fresh], limit=1, fields=("count",)
        )
        counts: dict[str, int] = {}  # stored near-duplicate id -> its count, with this batch's repeats
        new_points: list[Point] = []
        stored: list[Interaction] = []
        for (interaction, vector, seen), hits in zip(fresh, found, strict=True):
            if hits and hits[0].score >= threshold:
                twin = hits[0]
                counts[twin.id] = counts.get(twin.id, int(twin.payload.get("count") or 1)) + seen
                self._stats.add(interaction.namespace, deduplicated=1)
                continue
            payload = interaction.payload()
            payload["count"] = seen
            new_points.append(Point(str(uuid.uuid4()), payload, vector))  # the store converts it once, in C
            stored.append(interaction)
        for point_id, count in counts.items():
            store.set_payload([point_id], {"count": count})
        if new_points:
            store.upsert(new_points)
        for interaction in stored:
            self._stats.add(interaction.namespace, captured=1)
            self._events.emit("capture", interaction)
        if self._known[0] is not store:
            self._known = (store, set())
        known = self._known[1]
        try:
            for namespace in {i.namespace for i in stored} - known:
                store.put_record(NAMESPACE_KIND, namespace, {"first_seen": time.time()})
                known.add(namespace)
        except StoreError as exc:  # the points are stored; the namespace is recorded next time
            logger.warning("distillkit could not record a namespace: %s", exc)
            self._stores.failed(exc, store)

    def _unique_within(
        self, interactions: Sequence[Interaction], threshold: float
    ) -> list[tuple[Interaction, np.ndarray, int]]:
        """The interactions that are no near-duplicate of an earlier one of the batch, with how
        many times each was seen in it (itself and its near-duplicates, which are counted)."""
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        vectors = [np.asarray(i.vector, dtype=np.float32) for i in interactions]
        for index, interaction in enumerate(interactions):
            groups[(interaction.namespace, interaction.fingerprint)].append(index)
        seen = [1] * len(interactions)  # 0: a near-duplicate of an earlier one
        for members in groups.values():
            if len(members) < 2:
                continue
            matrix = np.stack([vectors[k] for k in members])
            similar = matrix @ matrix.T >= threshold
            kept: list[int] = []
            for row, index in enumerate(members):
                earlier = next((k for k in kept if similar[row, k]), None)
                if earlier is None:
                    kept.append(row)
                    continue
                seen[index] = 0
                seen[members[earlier]] += 1
                self._stats.add(interactions[index].namespace, deduplicated=1)
        return [(i, v, n) for i, v, n in zip(interactions, vectors, seen, strict=True) if n]
