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

The error budget (:mod:`distillkit.routing.budget`) replaces the threshold once the namespace
has enough labels: the request is routed when its nearest trained neighbour's similarity and
answer class are within the fitted acceptance (an explicit per-call or scope threshold still
applies on top; the veto too). Until then the rule above decides. Exploration, in namespaces
with labels: a share (``explore_rate``, five times more while the budget is not fitted or where
the answer class is blocked) of the requests that have a trained neighbour is marked for a
background comparison: routed ones are also asked of the teacher (which costs a teacher call),
refused ones also of the student (the teacher's answer is there already): that is how labels
reach the similarities the router does not route yet.

The cross-check (``cross_check``, with the agreement rule): where answers repeat, a routed
request's :class:`~distillkit.routing.budget.Signals` carry the answers its nearest trained
neighbours got (``expected``); the pipeline delivers the student's answer only if it is one of
them, and otherwise lets the teacher answer (:meth:`distillkit.pipeline.Pipeline._cross_checked`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from distillkit.config import ENV, ROUTING_RULES
from distillkit.errors import ConfigError, StoreBusyError
from distillkit.routing.acceptance import Acceptance
from distillkit.routing.budget import ErrorBudget
from distillkit.routing.labels import Signals, answer_class, answer_key
from distillkit.routing.novelty import Novelty
from distillkit.routing.request import Request, RouteInfo
from distillkit.state import ActiveModel, ModelRegistry

if TYPE_CHECKING:
    import numpy as np

    from distillkit.routing.embedders import Embedder
    from distillkit.store.base import Store

__all__ = ["ROUTING_RULES", "Router", "answer_key"]

logger = logging.getLogger("distillkit")

#: The only payload field the rule reads from a neighbour (its teacher answer): fetching just this
#: keeps a search cheap when stored conversations are long.
ANSWER_FIELDS = ("response",)


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
        budget: ErrorBudget | None = None,
        explore_rate: float = 0.0,
        cross_check: str | None = None,
        lookup_timeout: float | None = None,
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
        #: The error budget's fitted acceptance per namespace (None: the rule above always decides).
        self.budget = budget
        #: Share of would-be-routed requests compared in the background (see the module docstring).
        self.explore_rate = explore_rate
        #: Where answers repeat, the student's answer must be the nearest trained neighbour's
        #: (``"nearest"``) or one of the ``neighbours`` nearest's (``"neighbours"``), or the teacher
        #: answers (None: off). See the module docstring.
        self.cross_check = cross_check
        #: Seconds a lookup waits at most while the embedded store builds its index (None: waits).
        self.lookup_timeout = lookup_timeout
        self._random = random.Random()
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
            return RouteInfo(False, ns, teacher, f"not routable: {request.key_failed or 'no query text'}")
        active = self.active_model(request)
        if active is None:
            return RouteInfo(False, ns, teacher, "no distilled model")
        try:
            fingerprint = request.fingerprint
            embedder = self._embedder()
            fits = getattr(embedder, "fits", None)
            if fits is not None and not fits(request.query):
                # A vector of the first tokens would stand for another request: never compare it.
                return RouteInfo(False, ns, teacher, "longer than the embedder's window", fingerprint=fingerprint)
            vector = request.vector = embedder.embed([request.query])[0]
            acceptance = self._acceptance(ns)
            novelty = Novelty(**acceptance.novelty) if acceptance is not None and acceptance.novelty else None
            agreement = self.rule == "agreement"
            wanted = max(1, self.neighbours) if agreement else 1
            hits = self._store().search(
                vector,
                namespace=ns,
                fingerprint=fingerprint,
                indexed=True,
                limit=max(wanted, novelty.k if novelty is not None else 1),
                fields=ANSWER_FIELDS,
                timeout=self.lookup_timeout,
            )
        except Exception as exc:
            return self._failed(request, exc)
        if not hits:
            return RouteInfo(False, ns, teacher, "no trained neighbour", fingerprint=fingerprint)
        best = hits[0]
        if novelty is not None and novelty.far([hit.score for hit in hits]):
            # Never-seen traffic: the teacher answers, and no exploration label is taken this far out.
            return RouteInfo(False, ns, teacher, "far from the trained requests", best.score, best.id, fingerprint)
        hits = hits[:wanted]
        threshold = self.threshold(request.threshold, active)
        agreeing = self._agreeing(hits) if agreement else None
        if best.score >= threshold:
            rule_reason: str | None = "similar request trained"
        elif agreeing is not None and agreeing >= self.neighbours and best.score >= threshold - self.agreement_margin:
            rule_reason = "neighbours agree"
        else:
            rule_reason = None
        klass = answer_class(answer_key(best.payload))
        repeating = agreeing is not None and agreeing >= 2
        verdict, budget_reason = acceptance.decide(best.score, klass) if acceptance is not None else (None, "")
        sure = acceptance.min_confidence_for(best.score, klass) if verdict and acceptance is not None else None
        request.signals = Signals(
            float(best.score), klass, repeating, self._expected(hits) if repeating else None, min_confidence=sure
        )
        request.student_model = active.model
        if active.probation and (acceptance is None or not acceptance.certified):
            routed, reason = False, "on probation: not certified yet"
        elif verdict is None:  # too few labels yet: the configured rule decides
            routed, reason = rule_reason is not None, rule_reason or "below threshold"
        elif verdict and request.threshold is not None and best.score < request.threshold:
            routed, reason = False, "below threshold"  # an explicit threshold still applies
        elif verdict and sure is not None and (request.stream or request.raw is not None):
            routed, reason = False, "student confidence needed: not checked on streams or raw responses"
        else:
            routed, reason = verdict, budget_reason
        if not routed:
            self._explore(request, acceptance, klass, "student", probation=active.probation)
            return RouteInfo(False, ns, teacher, reason, best.score, best.id, fingerprint, agreeing)
        try:
            veto = self._veto(request, vector, best, agreeing)
        except Exception as exc:
            return self._failed(request, exc)
        if veto is not None:
            return RouteInfo(
                False, ns, teacher, "untrained neighbour disagrees", best.score, best.id, fingerprint, agreeing, veto
            )
        self._explore(request, acceptance, klass, "teacher")
        # The namespace's active model answers: every indexed point was part of its training
        # (incremental rounds continue from the previous model, full rounds use all data).
        return RouteInfo(True, ns, active.model, reason, best.score, best.id, fingerprint, agreeing)

    def _failed(self, request: Request, exc: Exception) -> RouteInfo:
        """The teacher answers a request whose lookup failed, or waited out an index build."""
        self._on_error(request.namespace, exc)
        busy = isinstance(exc, StoreBusyError)
        why = "store busy: building its index" if busy else f"lookup failed: {type(exc).__name__}"
        return RouteInfo(False, request.namespace, request.teacher_model, why)

    def _acceptance(self, namespace: str) -> Acceptance | None:
        if self.budget is None:
            return None
        try:
            return self.budget.acceptance(namespace)
        except Exception as exc:  # no fit readable: the configured rule decides
            self._on_error(namespace, exc)
            return None

    def _explore(
        self, request: Request, acceptance: Acceptance | None, klass: str | None, side: str, *, probation: bool = False
    ) -> None:
        """Mark the request for a background comparison, at ``explore_rate`` (more where labels are few).

        Only in namespaces with labels already (from the promotion gate or shadow checks): one whose
        model was activated without any measurement is left to the configured rule.
        """
        if self.explore_rate <= 0 or acceptance is None:
            return
        if side == "student" and (not acceptance.certified or probation):
            # Nothing certified yet (too few labels, or none that passes: a bound near the budget
            # needs many), or a model on probation: every refused request is also asked of the
            # student (no teacher call: its answer is there already), so certification takes
            # requests, not weeks.
            rate = 1.0
        else:
            few = not acceptance.certified or acceptance.is_blocked(
                request.signals.similarity if request.signals else 1.0, klass
            )
            rate = min(1.0, self.explore_rate * (self.EXPLORE_BOOST if few else 1.0))
        if self._random.random() < rate:
            request.explore = side

    #: How much more often requests are explored where the budget has few labels.
    EXPLORE_BOOST = 5.0

    def _veto(self, request: Request, vector: np.ndarray, best: Any, agreeing: int | None) -> str | None:
        """The id of an untrained point that contradicts the trained neighbour ``best``, if any.

        Only where answers repeat (two or more of the trained neighbours share ``best``'s answer):
        free-text answers always differ, and comparing them would veto every route.
        """
        if self.veto_margin is None or agreeing is None or agreeing < 2:
            return None
        hits = self._store().search(
            vector,
            namespace=request.namespace,
            fingerprint=request.fingerprint,
            indexed=False,
            limit=1,
            fields=ANSWER_FIELDS,
            timeout=self.lookup_timeout,
        )
        if not hits or hits[0].score < best.score - self.veto_margin:
            return None
        untrained = answer_key(hits[0].payload)
        return hits[0].id if untrained is not None and untrained != answer_key(best.payload) else None

    def _expected(self, hits: list[Any]) -> frozenset[str] | None:
        """The answers the student's must be one of to pass the cross-check (None: no cross-check)."""
        if self.cross_check is None:
            return None
        chosen = hits[:1] if self.cross_check == "nearest" else hits
        return frozenset(k for k in (answer_class(answer_key(hit.payload)) for hit in chosen) if k is not None)

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
