"""The routing decision: may the namespace's distilled model answer this request?

A request is routed when its namespace has an active distilled model and its nearest trained
(``indexed``) neighbour of the same task (fingerprint) is at least ``threshold`` similar (the
``top1`` rule). The ``agreement`` rule also routes a request slightly below the threshold (by at
most ``agreement_margin``) when its ``neighbours`` nearest trained neighbours all received the
same teacher answer: it only ever adds routes, so with free-text answers that never repeat it
behaves exactly like ``top1``. The agreement rule also takes a route back when the teacher has
answered a similar request *differently* since the last training round: the nearest untrained
(``indexed: False``) point is within ``veto_margin`` of the trained neighbour's similarity and
holds another answer, where the trained neighbours' answers repeat (so answers can be compared
at all). That is traffic the distilled model has not learnt yet. Everything else goes to the
teacher. Nothing here raises into the caller: a failing store or embedder means "teacher".
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from distillkit import records
from distillkit.config import ENV, ROUTING_RULES
from distillkit.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from distillkit.embedders import Embedder
    from distillkit.scope import KeyFunction
    from distillkit.store.base import Store

__all__ = ["ROUTING_RULES", "ModelRegistry", "Request", "RouteInfo", "Router", "answer_key", "route_info"]

logger = logging.getLogger("distillkit")


@dataclass(frozen=True)
class RouteInfo:
    """How a call was answered; see :func:`route_info`.

    Attributes:
        routed: True when the distilled model answered.
        namespace: the call's namespace.
        model: the model that answered (the distilled one, or the teacher).
        similarity: cosine similarity of the nearest trained neighbour, when one was looked up.
        neighbour_id: that neighbour's point id.
        reason: why: ``"similar request trained"``, ``"below threshold"``, ``"no distilled model"``,
            ``"routing off"``, ``"not routable: <why>"``, ``"distilled model failed: <error>"``,
            ``"neighbours agree"`` (the agreement rule), ...
        fingerprint: the task's fingerprint, when it was computed.
        agreeing: with the agreement rule, how many of the nearest trained neighbours share the
            nearest one's teacher answer (None with the top1 rule).
        vetoed_by: the untrained point whose different teacher answer sent the request back to
            the teacher (reason ``"untrained neighbour disagrees"``).
    """

    routed: bool
    namespace: str
    model: str | None
    reason: str
    similarity: float | None = None
    neighbour_id: str | None = None
    fingerprint: str | None = None
    agreeing: int | None = None
    vetoed_by: str | None = None


def answer_key(payload: Mapping[str, Any]) -> str | None:
    """A stored point's teacher answer in a canonical form, for comparing answers (None if absent).

    Content is compared with whitespace collapsed; tool calls by name and arguments (their ids
    differ on every call).
    """
    response = payload.get("response")
    if not isinstance(response, Mapping):
        return None
    content = response.get("content")
    text = " ".join(content.split()) if isinstance(content, str) else content
    calls = [
        (call.get("function") or {}) if isinstance(call, Mapping) else call for call in response.get("tool_calls") or []
    ]
    return json.dumps([text, calls], sort_keys=True, default=str)


_infos: dict[int, RouteInfo] = {}


def attach(obj: Any, info: RouteInfo) -> None:
    """Remember how ``obj`` (a response the caller receives) was answered, for :func:`route_info`."""
    key = id(obj)
    _infos[key] = info
    try:
        weakref.finalize(obj, _infos.pop, key, None)
    except TypeError:  # an object without weak references: keep nothing rather than leak
        _infos.pop(key, None)


def route_info(response: Any) -> RouteInfo | None:
    """How a response of an intercepted call was answered, or None if distillkit did not see it.

    Works for ``ChatCompletion`` objects, streams and raw responses::

        completion = client.chat.completions.create(...)
        info = distillkit.route_info(completion)
        if info and info.routed:
            print(f"answered by {info.model} (similarity {info.similarity:.3f})")
    """
    own = getattr(response, "_self_route", None)  # stream proxies carry it themselves
    if isinstance(own, RouteInfo):
        return own
    return _infos.get(id(response))


@dataclass
class Request:
    """One intercepted call, resolved: the request keywords and the options that apply to it."""

    kwargs: dict[str, Any]
    namespace: str
    threshold: float | None  # set explicitly (call, scope or wrap); else calibrated or configured
    route: bool
    capture: bool
    key: KeyFunction | None = None
    raw: str | None = None  # None, "true" (with_raw_response) or "stream"/"raw" (streamed response)
    vector: np.ndarray | None = None
    info: RouteInfo | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def stream(self) -> bool:
        return self.kwargs.get("stream") is True

    @property
    def teacher_model(self) -> str:
        return str(self.kwargs.get("model"))

    @functools.cached_property
    def fingerprint(self) -> str:
        return records.fingerprint(self.kwargs)

    @functools.cached_property
    def query(self) -> str:
        messages = self.kwargs.get("messages") or []
        if self.key is not None:
            return str(self.key(messages))
        return records.query_text(messages)

    @functools.cached_property
    def unroutable(self) -> str | None:
        return records.unroutable_reason(self.kwargs)


@dataclass(frozen=True)
class ActiveModel:
    """A namespace's entry in the model registry."""

    namespace: str
    model: str
    base_model: str | None = None
    job_id: str | None = None
    trained_count: int = 0
    activated_at: float = 0.0
    threshold: float | None = None  # a calibrated threshold, when one was saved

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ActiveModel:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in record.items() if k in known})


class ModelRegistry:
    """Namespace → active distilled model, kept in the store's ``model`` records.

    Reads are cached for ``ttl`` seconds so that the request path almost never touches the
    store, while a model activated by another process (a ``distillkit train`` worker) is seen
    within that time.
    """

    KIND = "model"

    def __init__(self, store: Callable[[], Store], ttl: float = 5.0) -> None:
        self._store = store
        self._ttl = ttl
        self._cache: dict[str, ActiveModel] = {}
        self._loaded_at = -float("inf")
        self._lock = threading.Lock()

    def get(self, namespace: str) -> ActiveModel | None:
        if time.monotonic() - self._loaded_at > self._ttl:
            self.refresh()
        return self._cache.get(namespace)

    def all(self) -> dict[str, ActiveModel]:
        self.refresh()
        return dict(self._cache)

    def refresh(self) -> None:
        with self._lock:
            self._loaded_at = time.monotonic()  # also on failure: do not hammer a broken store
            records_ = self._store().list_records(self.KIND)
            self._cache = {ns: ActiveModel.from_record({**r, "namespace": ns}) for ns, r in records_.items()}

    def activate(self, model: ActiveModel) -> None:
        self._store().put_record(self.KIND, model.namespace, asdict(model))
        with self._lock:
            self._cache[model.namespace] = model

    def deactivate(self, namespace: str) -> None:
        self._store().delete_record(self.KIND, namespace)
        with self._lock:
            self._cache.pop(namespace, None)

    def set_threshold(self, namespace: str, threshold: float | None) -> None:
        current = self.get(namespace)
        if current is not None:
            self.activate(replace(current, threshold=threshold))


class Router:
    """Decides teacher or student for a :class:`Request`, filling ``request.info`` and ``.vector``."""

    def __init__(
        self,
        store: Callable[[], Store],
        embedder: Callable[[], Embedder],
        registry: ModelRegistry,
        on_error: Callable[[str, BaseException], None],
        default_threshold: float,
        *,
        rule: str = "agreement",
        neighbours: int = 5,
        agreement_margin: float = 0.02,
        veto_margin: float | None = 0.05,
    ) -> None:
        if rule not in ROUTING_RULES:
            raise ConfigError(
                f"{ENV.ROUTING_RULE}={rule!r} is not a routing rule.",
                variable=ENV.ROUTING_RULE,
                fix=f"Use one of {', '.join(ROUTING_RULES)}.",
            )
        self.default_threshold = default_threshold
        #: ``"top1"`` or ``"agreement"`` (see the module docstring).
        self.rule = rule
        #: How many nearest trained neighbours the agreement rule asks to share one answer.
        self.neighbours = neighbours
        #: How far below the threshold the agreement rule may route.
        self.agreement_margin = agreement_margin
        #: With the agreement rule: an untrained neighbour at most this much less similar than the
        #: trained one, with another teacher answer, sends the request to the teacher (None: off).
        self.veto_margin = veto_margin
        self._store = store
        self._embedder = embedder
        self.registry = registry
        self._on_error = on_error

    def active_model(self, request: Request) -> ActiveModel | None:
        """The namespace's distilled model, if the request could be routed to it at all."""
        if not request.route or request.raw in ("stream", "raw"):
            return None
        try:
            return self.registry.get(request.namespace)
        except Exception as exc:
            self._on_error(request.namespace, exc)
            return None

    def needs_lookup(self, request: Request) -> bool:
        """True when deciding needs an embedding and a search (I/O worth moving off an event loop)."""
        return self.active_model(request) is not None and request.unroutable is None

    def decide(self, request: Request) -> RouteInfo:
        info = self._decide(request)
        request.info = info
        return info

    def _decide(self, request: Request) -> RouteInfo:
        ns, teacher = request.namespace, request.teacher_model
        if not request.route:
            return RouteInfo(False, ns, teacher, "routing off")
        if request.raw in ("stream", "raw"):
            return RouteInfo(False, ns, teacher, "not routable: streamed raw response")
        if request.unroutable is not None:
            return RouteInfo(False, ns, teacher, f"not routable: {request.unroutable}")
        if not request.query.strip():
            return RouteInfo(False, ns, teacher, "not routable: no query text")
        active = self.active_model(request)
        if active is None:
            return RouteInfo(False, ns, teacher, "no distilled model")
        try:
            fingerprint = request.fingerprint
            vector = request.vector = self._embedder().embed([request.query])[0]
            agreement = self.rule == "agreement"
            limit = max(1, self.neighbours) if agreement else 1
            hits = self._store().search(vector, namespace=ns, fingerprint=fingerprint, indexed=True, limit=limit)
        except Exception as exc:
            self._on_error(ns, exc)
            return RouteInfo(False, ns, teacher, f"lookup failed: {type(exc).__name__}")
        if not hits:
            return RouteInfo(False, ns, teacher, "no trained neighbour", fingerprint=fingerprint)
        best = hits[0]
        threshold = self.threshold(request.threshold, active)
        agreeing = self._agreeing(hits) if agreement else None
        if best.score >= threshold:
            reason = "similar request trained"
        elif agreeing is not None and agreeing >= self.neighbours and best.score >= threshold - self.agreement_margin:
            reason = "neighbours agree"
        else:
            return RouteInfo(False, ns, teacher, "below threshold", best.score, best.id, fingerprint, agreeing)
        try:
            veto = self._veto(request, vector, best, agreeing)
        except Exception as exc:
            self._on_error(ns, exc)
            return RouteInfo(False, ns, teacher, f"lookup failed: {type(exc).__name__}")
        if veto is not None:
            return RouteInfo(
                False, ns, teacher, "untrained neighbour disagrees", best.score, best.id, fingerprint, agreeing, veto
            )
        # The namespace's active model answers: every indexed point was part of its training
        # (incremental rounds continue from the previous model, full rounds use all data).
        return RouteInfo(True, ns, active.model, reason, best.score, best.id, fingerprint, agreeing)

    def _veto(self, request: Request, vector: np.ndarray, best: Any, agreeing: int | None) -> str | None:
        """The id of an untrained point that contradicts the trained neighbour ``best``, if any.

        Only where answers repeat (two or more of the trained neighbours share ``best``'s answer):
        free-text answers always differ, and comparing them would veto every route.
        """
        if self.veto_margin is None or agreeing is None or agreeing < 2:
            return None
        hits = self._store().search(
            vector, namespace=request.namespace, fingerprint=request.fingerprint, indexed=False, limit=1
        )
        if not hits or hits[0].score < best.score - self.veto_margin:
            return None
        untrained = answer_key(hits[0].payload)
        return hits[0].id if untrained is not None and untrained != answer_key(best.payload) else None

    @staticmethod
    def _agreeing(hits: list[Any]) -> int:
        """How many hits got the same teacher answer as the first (0 when it has none stored)."""
        first = answer_key(hits[0].payload)
        if first is None:
            return 0
        return sum(answer_key(hit.payload) == first for hit in hits)

    def threshold(self, explicit: float | None, active: ActiveModel | None) -> float:
        """Explicit (call, scope, wrap) first, then the namespace's calibrated one, then the config's."""
        if explicit is not None:
            return explicit
        if active is not None and active.threshold is not None:
            return active.threshold
        return self.default_threshold
