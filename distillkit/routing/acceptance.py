"""Fitting what a namespace may route to its error budget, from measured labels.

The user states the share of routed answers that may disagree with the teacher
(``DISTILLKIT_MAX_ERROR``, per namespace if they want). Every time distillkit learns whether the
student answered a request as the teacher did, it keeps a :class:`Label`: the routing signals at
decision time (the similarity of the nearest trained neighbour, that neighbour's answer class
where answers repeat, the student's confidence) and the outcome. Labels come from the promotion
gate (held-out points, :mod:`distillkit.training.gate`), shadow checks and exploration (requests
also answered by the other side, in the background).

From its labels each namespace gets an :class:`Acceptance` (:func:`fit`):

* **a similarity threshold**, the lowest (most coverage) at which the upper confidence bound of
  the disagreement rate among the labels at or above it stays within the budget. The bound is
  Clopper-Pearson's exact one-sided bound (:func:`upper_bound`, confidence 0.95 by default):
  unlike Wilson's it never under-covers near a rate of 0, which is where a budget of a few percent
  lives. Thresholds are tested in fixed sequences, walking down the labels' similarities and
  stopping at the first threshold that fails (fixed-sequence testing, as in Learn-then-Test,
  Angelopoulos et al. 2021), so the chosen threshold keeps the bound's confidence although many
  were tried. Sequences start where ``needed``, twice, four times ... that many labels are
  accepted (``needed``: the fewest with which a perfect record passes), so a few early
  disagreements among the most similar labels stop one sequence, not all; each runs at an equal
  share of the risk (Bonferroni), and the lowest threshold any reaches is chosen. Where the
  sequences start depends only on how many labels there are, never on their outcomes.
* **on one of three signals**: the similarity, the student's own confidence (the lowest token
  log-probability of its answer, :mod:`distillkit.routing.confidence`), or *either* (a label's
  larger rank among the labels' similarities and confidences, so a threshold on it accepts a high
  similarity or a high confidence). Each signal is tried at a third of the risk (Bonferroni) and
  the one accepting most labels is kept; confidence only where (nearly) every label carries one.
  A route on confidence is conditional: the student answers first, and its answer is delivered
  only if its confidence reaches :attr:`Acceptance.min_confidence`.
* **from every label, the gate's included**: the held-out answers certify a namespace at
  promotion. (Before, only traffic labels did, because on BANKING77 with unknown intents in traffic
  fitting on gate labels let 17% wrong answers through a 10% budget; never-seen traffic is now
  deferred by :mod:`distillkit.routing.novelty` and answers are cross-checked where they repeat.)
* **locally, per answer class** (the teacher answer of the nearest trained neighbour, hashed): a
  class with enough labels of its own gets its own threshold by the same procedure; a class with
  fewer, whose most recent label is a disagreement, is *blocked* up to that label's similarity
  plus :data:`BLOCK_MARGIN` (a wrong answer at 0.75 says nothing against a paraphrase at 0.95;
  not routed there, even before the
  namespace has a fit) until a later label shows the student right there (exploration asks more
  often in such regions). The namespace threshold is fitted on the labels of the classes it
  decides, less each kept class's latest label (the one that decided it is not blocked), so the
  choice of classes does not bias the bound; a class seen once keeps its label.

With fewer labels than a perfect record needs, the fit says so (status ``"fallback"``) and the
router keeps its configured rule and threshold: a namespace starts as conservative as before.
If even the most similar labels break the budget, the namespace is ``"closed"``: nothing is routed
until new labels (from the next model's gate, or exploration) show otherwise.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from distillkit.errors import ConfigError
from distillkit.routing.labels import Label

__all__ = ["CONFIDENCE", "Acceptance", "Signal", "check_rate", "fit", "labels_needed", "min_labels", "upper_bound"]

#: One-sided confidence of the bound on the disagreement rate.
CONFIDENCE = 0.95
#: A class whose latest label is a disagreement is refused up to that label's similarity plus this.
BLOCK_MARGIN = 0.05

Status = Literal["fitted", "closed", "fallback"]
#: What the fitted acceptance routes on: the nearest trained neighbour's similarity, the student's
#: own confidence (:mod:`distillkit.routing.confidence`), or either of them.
Signal = Literal["similarity", "confidence", "either"]


def check_rate(name: str, value: float, *, low_open: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (0.0 < value < 1.0)
    if not ok:
        raise ConfigError(f"{name}={value!r} is not in (0, 1).", variable=name, fix="Use e.g. 0.05.")


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n up to a few thousand)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k + 1):
        log_choose = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
        total += math.exp(log_choose + i * log_p + (n - i) * log_q)
    return min(total, 1.0)


def upper_bound(errors: int, n: int, confidence: float = CONFIDENCE) -> float:
    """Clopper-Pearson one-sided upper confidence bound of a rate seen as ``errors`` out of ``n``.

    The largest rate ``p`` under which seeing ``errors`` or fewer still has probability
    ``1 - confidence``. With no errors it is ``1 - (1 - confidence) ** (1 / n)``.

    Example:
        >>> round(upper_bound(0, 59), 4)
        0.0495
    """
    if n <= 0:
        return 1.0
    if errors >= n:
        return 1.0
    alpha = 1.0 - confidence
    if errors == 0:
        return 1.0 - alpha ** (1.0 / n)
    low, high = errors / n, 1.0
    for _ in range(60):  # bisection: the CDF falls as p grows
        mid = (low + high) / 2
        if _binomial_cdf(errors, n, mid) > alpha:
            low = mid
        else:
            high = mid
    return high


def min_labels(max_error: float, confidence: float = CONFIDENCE) -> int:
    """The fewest labels with which a perfect record (no disagreement) fits the budget."""
    return max(1, math.ceil(math.log(1.0 - confidence) / math.log1p(-max_error)))


@dataclass(frozen=True)
class Acceptance:
    """A namespace's fitted acceptance; see the module docstring and :meth:`decide`.

    Attributes:
        status: ``fitted`` (route at or above ``threshold``), ``closed`` (route nothing) or
            ``fallback`` (too few labels: the router's configured rule applies).
        threshold: the fitted similarity threshold (``fitted`` only).
        max_error: the budget it was fitted to; ``confidence``: of the bound.
        labels: labels it was fitted on; ``accepted`` of them at or above ``threshold``, with
            ``errors`` disagreements and ``bound`` the upper bound of their rate.
        classes: answer class → its own threshold, or None where the class is closed.
        blocked_at: for each blocked class, the similarity of its latest (disagreeing) label: the
            class is refused up to that similarity plus :data:`BLOCK_MARGIN`.
        blocked: answer classes whose latest label is a disagreement, without enough labels of
            their own for a threshold.
        reason: how it was fitted, in words.
        signal: what it routes on (``similarity``, ``confidence`` or ``either``).
        min_confidence: with ``confidence`` / ``either``, the student's confidence an answer needs.
        novelty: the out-of-distribution radius (:mod:`distillkit.routing.novelty`) fitted on the
            trained points, as a record; None where none was fitted.
    """

    status: Status
    max_error: float
    confidence: float
    labels: int
    reason: str
    threshold: float | None = None
    accepted: int = 0
    errors: int = 0
    bound: float | None = None
    classes: dict[str, float | None] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    blocked_at: dict[str, float] = field(default_factory=dict)
    fitted_at: float = field(default_factory=time.time)
    signal: Signal = "similarity"
    min_confidence: float | None = None
    novelty: dict[str, Any] | None = None

    @property
    def certified(self) -> bool:
        """Whether the labels certify routing anything (a fitted threshold or confidence)."""
        return self.status == "fitted"

    def decide(self, similarity: float, klass: str | None) -> tuple[bool | None, str]:
        """``(route?, why)``; ``None`` means "not fitted: use the configured rule".

        A route may be conditional: :meth:`min_confidence_for` says which confidence the student's
        answer must then reach to be delivered.
        """
        if klass is not None and klass in self.classes:
            local = self.classes[klass]
            if local is None:
                return False, "answer class over the error budget"
            return (True, "within the error budget") if similarity >= local else (False, "below fitted threshold")
        if self.is_blocked(similarity, klass):
            return False, "answer class last answered wrong"
        if self.status == "fallback":
            return None, self.reason
        if self.status == "closed":
            return False, "over the error budget"
        if self.min_confidence_for(similarity, klass) is not None:
            return True, "within the error budget if the student is sure"
        if self.threshold is not None and similarity >= self.threshold:
            return True, "within the error budget"
        return False, "below fitted threshold"

    def is_blocked(self, similarity: float, klass: str | None) -> bool:
        """Whether ``klass`` is refused at ``similarity`` (see :attr:`blocked_at`)."""
        if klass is None or klass not in self.blocked:
            return False
        return similarity <= self.blocked_at.get(klass, math.inf) + BLOCK_MARGIN

    def min_confidence_for(self, similarity: float, klass: str | None = None) -> float | None:
        """The confidence the student's answer must reach where :meth:`decide` routes on it, else None."""
        if not self.certified or self.signal == "similarity" or self.min_confidence is None:
            return None
        if klass is not None and (klass in self.classes or self.is_blocked(similarity, klass)):
            return None
        if self.signal == "either" and self.threshold is not None and similarity >= self.threshold:
            return None
        return self.min_confidence

    def as_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Acceptance:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in record.items() if k in known})


#: A label as a fixed sequence sees it: its score on the signal tested, and whether it agreed.
Scored = tuple[float, bool]


def _walk(
    ordered: Sequence[Scored], start: int, stop: int, max_error: float, confidence: float
) -> tuple[float | None, int, int, float | None]:
    """One fixed sequence: thresholds at the labels' scores, from the one with ``start`` labels at
    or above it downwards, while the bound passes; thresholds with ``stop`` labels or more are left
    to another sequence.

    Returns ``(threshold, accepted, errors, bound)`` of the lowest passing threshold (all None/0
    when the first one tested fails).
    """
    best: tuple[float | None, int, int, float | None] = (None, 0, 0, None)
    errors = 0
    i = 0
    while i < len(ordered):
        # Labels with the same score go together: a threshold cannot split them.
        similarity = ordered[i][0]
        while i < len(ordered) and ordered[i][0] == similarity:
            errors += not ordered[i][1]
            i += 1
        if i < start:
            continue
        if i >= stop:
            break
        bound = upper_bound(errors, i, confidence)
        if bound > max_error:
            break
        best = (similarity, i, errors, bound)
    return best


def _plan(n: int, max_error: float, confidence: float) -> tuple[int, list[int], float]:
    """Where the fixed sequences start, for ``n`` labels: ``(needed, starts, confidence of each)``.

    Starts at ``needed``, ``2 * needed``, ``4 * needed``, ... labels accepted (``needed``: the fewest
    with which a perfect record passes at each sequence's confidence), each sequence at an equal
    share of the risk (Bonferroni). Only ``n`` decides, never the outcomes.
    """
    count = 1
    while True:
        each = 1.0 - (1.0 - confidence) / count
        needed = min_labels(max_error, each)
        starts = [needed * 2**k for k in range(64) if needed * 2**k <= n]
        if len(starts) <= count:
            return needed, starts, each
        count = len(starts)


def _threshold(
    labels: Sequence[Scored], max_error: float, confidence: float
) -> tuple[float | None, int, int, float | None, bool]:
    """The lowest threshold the labels certify, by fixed sequences from several starting points.

    Each sequence walks down the similarities from its start (``needed``, twice that, four times
    that ... labels accepted) while the bound passes, so a few early disagreements among the most
    similar labels stop one sequence, not the others. The lowest threshold any sequence reaches is
    chosen; each runs at an equal share of the risk (Bonferroni), so the choice keeps the
    confidence.

    Returns ``(threshold, accepted, errors, bound, tested)``; ``tested`` is False when there are too
    few labels for a perfect record to pass.
    """
    _, starts, each = _plan(len(labels), max_error, confidence)
    if not starts:
        return None, 0, 0, None, False
    ordered = sorted(labels, key=lambda label: -label[0])
    best: tuple[float | None, int, int, float | None] = (None, 0, 0, None)
    for start in starts:
        found = _walk(ordered, start, len(ordered) + 1, max_error, each)
        if found[0] is not None and found[1] > best[1]:
            best = found
    return (*best, True)


#: The confidence score of a label without one: below every real log-probability.
_UNSURE = -1e9


def _signals(pool: Sequence[Label]) -> list[Signal]:
    """The signals a fit tries: confidence too where (nearly) every label carries it."""
    with_confidence = sum(label.confidence is not None for label in pool)
    if pool and with_confidence >= 0.9 * len(pool):
        return ["similarity", "confidence", "either"]
    return ["similarity"]


def _cdf(values: Sequence[float]) -> Callable[[float], float]:
    """The empirical distribution function of ``values`` (the share at or below a value)."""
    ordered = sorted(values)
    return lambda x: bisect.bisect_right(ordered, x) / len(ordered) if ordered else 0.0


def _scored(
    pool: Sequence[Label], signal: Signal
) -> tuple[list[Scored], Callable[[float], tuple[float | None, float | None]]]:
    """The labels scored on ``signal``, and what a threshold on that score means as
    ``(similarity threshold, confidence threshold)``.

    ``either`` scores a label by the larger of its similarity's and its confidence's rank among the
    labels (their empirical distribution functions, which depend on the signals only, never on the
    outcomes): a threshold on it accepts a high similarity *or* a high confidence.
    """
    sims = [label.similarity for label in pool]
    confs = [label.confidence if label.confidence is not None else _UNSURE for label in pool]
    if signal == "similarity":
        return [(x, label.agreed) for x, label in zip(sims, pool, strict=True)], lambda t: (t, None)
    if signal == "confidence":
        return [(x, label.agreed) for x, label in zip(confs, pool, strict=True)], lambda t: (None, t)
    rank_s, rank_c = _cdf(sims), _cdf([c for c in confs if c > _UNSURE])
    scored = [(max(rank_s(a), rank_c(b)), label.agreed) for a, b, label in zip(sims, confs, pool, strict=True)]

    def convert(t: float) -> tuple[float | None, float | None]:
        at_s = [x for x in sims if rank_s(x) >= t]
        at_c = [x for x in confs if x > _UNSURE and rank_c(x) >= t]
        return (min(at_s) if at_s else math.inf), (min(at_c) if at_c else math.inf)

    return scored, convert


def labels_needed(max_error: float, confidence: float = CONFIDENCE, *, signals: int = 3) -> int:
    """The fewest labels, all agreeing, with which a fit certifies a namespace (``signals`` tried)."""
    return _plan(10**9, max_error, 1.0 - (1.0 - confidence) / signals)[0]


def fit(labels: Sequence[Label], *, max_error: float, confidence: float = CONFIDENCE) -> Acceptance:
    """Fit an acceptance to ``labels`` (oldest first) under ``max_error`` (see the module docstring)."""
    check_rate("max_error", max_error)
    check_rate("confidence", confidence)
    by_class: dict[str, list[Label]] = {}
    for label in labels:
        if label.answer_class is not None:
            by_class.setdefault(label.answer_class, []).append(label)
    classes: dict[str, float | None] = {}
    blocked: list[str] = []
    blocked_at: dict[str, float] = {}

    # The namespace's acceptance is fitted on the labels of what it decides: not the classes with
    # their own threshold, nor the blocked ones. A class's latest label decides whether it is
    # blocked, so that label is left out for the classes kept: their other labels are then an
    # unbiased sample of how the student does there. A class seen once keeps its one label
    # either way (answers that never repeat, like extraction's, are all such classes).
    pool = [label for label in labels if label.answer_class is None]
    for klass, own in sorted(by_class.items()):
        if _plan(len(own), max_error, confidence)[1]:
            local, _, _, _, _ = _threshold([(x.similarity, x.agreed) for x in own], max_error, confidence)
            classes[klass] = local
            continue
        if not own[-1].agreed:
            blocked.append(klass)
            blocked_at[klass] = own[-1].similarity
        if len(own) == 1:
            pool.extend(own)
        elif own[-1].agreed:
            pool.extend(own[:-1])
    # Each signal is tried at an equal share of the risk (Bonferroni); the one accepting most wins.
    signals = _signals(pool)
    each = 1.0 - (1.0 - confidence) / len(signals)
    chosen: tuple[Signal, float | None, float | None, int, int, float | None] | None = None
    for signal in signals:
        scored, convert = _scored(pool, signal)
        found, accepted, errors, bound, _ = _threshold(scored, max_error, each)
        if found is not None and (chosen is None or accepted > chosen[3]):
            chosen = (signal, *convert(found), accepted, errors, bound)
    needed, starts, _ = _plan(len(pool), max_error, each)
    tested = bool(starts)
    if not tested and _plan(len(labels), max_error, each)[1]:
        # Enough labels, but not outside the blocked classes and those fitted on their own: falling
        # back to the configured rule here would route what the labels advise against.
        status: Status = "closed"
        reason = f"{len(pool)} labels outside blocked or separately fitted answer classes; {needed} needed"
    elif not tested:
        status = "fallback"
        reason = f"{len(pool)} labels; {needed} needed to fit a {max_error:g} budget"
        if classes:
            reason = f"{len(classes)} answer classes fitted on their own; others: {reason}"
    elif chosen is None:
        status, reason = "closed", f"no threshold keeps the labels within the {max_error:g} budget"
    else:
        status = "fitted"
        reason = f"{chosen[0]}: the lowest threshold whose {confidence:g} upper bound of disagreement <= {max_error:g}"
    signal, threshold, min_confidence, accepted, errors, bound = chosen or ("similarity", None, None, 0, 0, None)
    return Acceptance(
        status,
        max_error=max_error,
        confidence=confidence,
        labels=len(labels),
        reason=reason,
        threshold=threshold if threshold is None or math.isfinite(threshold) else None,
        accepted=accepted,
        errors=errors,
        bound=round(bound, 4) if bound is not None else None,
        classes=classes,
        blocked=blocked,
        blocked_at=blocked_at,
        signal=signal,
        min_confidence=min_confidence if min_confidence is None or math.isfinite(min_confidence) else None,
    )
