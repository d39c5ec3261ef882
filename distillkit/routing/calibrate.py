"""Pick a namespace's routing threshold from its own stored points.

Leave-one-out: every stored point (indexed or not) is embedded again from its stored ``query``
and its nearest *other* point of the same namespace and task (fingerprint) is looked up in the
store. The pair is labelled *agreeing* when both got the same teacher answer
(:func:`distillkit.routing.router.answer_key`). For a candidate threshold ``t``, *precision* is agreeing
pairs / pairs with similarity ≥ ``t`` and *coverage* is pairs ≥ ``t`` / all pairs. The chosen
threshold is the lowest candidate whose precision reaches the target with at least
``min_support`` pairs above it; with less data nothing is chosen and the configured threshold stays.

It measures whether a neighbour's teacher answer would have been right, which is what routing
bets on; it only means something where answers repeat (labels, JSON, tool calls), not for free
text that never repeats word for word.

Measured labels come first. When the error budget has at least ``min_support`` labels for the
active model (the promotion gate's held-out points, shadow checks and exploration: the student's
own answers compared with the teacher's, :mod:`distillkit.routing.budget`), the curve is computed
from them instead: each label is the similarity the router saw and whether the student answered as
the teacher. That measures the student itself, on every workload (free text and extraction, whose
answers never repeat, too) and needs no embedding. ``Calibration.source`` says which; where neither
can choose, ``reason`` says why in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from distillkit.errors import ConfigError
from distillkit.routing.labels import Label, answer_key

if TYPE_CHECKING:
    from distillkit.routing.embedders import Embedder
    from distillkit.store.base import Store

__all__ = ["CALIBRATION_FLOOR", "MIN_DISAGREEING", "Calibration", "CurvePoint", "calibrate", "candidate_thresholds"]

logger = logging.getLogger("distillkit")

#: A calibrated threshold is never below this (a chosen lower one is raised to it, with a warning).
CALIBRATION_FLOOR = 0.7
#: Disagreeing pairs needed below a threshold before it is trusted (else none is chosen).
MIN_DISAGREEING = 3


@dataclass(frozen=True)
class CurvePoint:
    """Precision and coverage of the leave-one-out pairs at one threshold."""

    threshold: float
    precision: float
    coverage: float
    pairs: int


@dataclass
class Calibration:
    """The result of :func:`calibrate`.

    Attributes:
        namespace: the namespace measured.
        target_precision: the precision asked for.
        points: stored points looked at; ``pairs``: those with a neighbour and an answer.
        threshold: the chosen threshold, or None when ``reason`` says why none was chosen.
        curve: one :class:`CurvePoint` per candidate threshold, lowest first.
        source: ``"labels"`` (the student's measured answers) or ``"pairs"`` (stored points'
            leave-one-out neighbours); ``pairs`` counts the measurements either way.
    """

    namespace: str
    target_precision: float
    min_support: int
    points: int
    pairs: int
    threshold: float | None
    reason: str
    curve: list[CurvePoint] = field(default_factory=list)
    source: str = "pairs"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def candidate_thresholds(low: float = 0.5, high: float = 0.99, step: float = 0.01) -> list[float]:
    """The thresholds tried, lowest first."""
    count = round((high - low) / step) + 1
    return [round(low + i * step, 4) for i in range(count)]


def _pairs(store: Store, embedder: Embedder, namespace: str, batch_size: int) -> tuple[int, list[tuple[float, bool]]]:
    """(points looked at, [(similarity to the nearest other point, same teacher answer)])."""
    points = [p for p in store.scroll(namespace=namespace) if str(p.payload.get("query") or "").strip()]
    keys = {p.id: answer_key(p.payload) for p in points}
    pairs: list[tuple[float, bool]] = []
    for start in range(0, len(points), batch_size):
        batch = points[start : start + batch_size]
        vectors = embedder.embed([str(p.payload["query"]) for p in batch])
        for point, vector in zip(batch, vectors, strict=True):
            mine = keys[point.id]
            if mine is None:
                continue
            hits = store.search(vector, namespace=namespace, fingerprint=point.payload.get("fingerprint"), limit=2)
            other = next((h for h in hits if h.id != point.id), None)
            if other is None:
                continue
            theirs = answer_key(other.payload)
            if theirs is None:
                continue
            pairs.append((float(other.score), theirs == mine))
    return len(points), pairs


def calibrate(
    store: Store,
    embedder: Embedder,
    namespace: str,
    target_precision: float = 0.95,
    *,
    min_support: int = 20,
    thresholds: Sequence[float] | None = None,
    batch_size: int = 256,
    labels: Sequence[Label] = (),
) -> Calibration:
    """Measure the namespace's precision/coverage curve and choose a threshold (see the module doc).

    Args:
        store: where the namespace's points are.
        embedder: the embedder the store was built with (the Distiller's ``embedder``).
        namespace: the namespace to calibrate.
        target_precision: the share of routed-like pairs whose answers must agree (0 < p ≤ 1).
        min_support: pairs needed at or above a threshold for it to be chosen.
        thresholds: candidates; default 0.50 to 0.99 by 0.01.
        labels: the error budget's labels of the namespace, used instead of pairs when there are at
            least ``min_support`` of them.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ConfigError(
            f"target precision {target_precision!r} is not in (0, 1].",
            variable="target_precision",
            fix="Use e.g. 0.95.",
        )
    measured = [(label.similarity, label.agreed) for label in labels]
    source = "labels" if len(measured) >= min_support else "pairs"
    if source == "labels":
        count, pairs = len(measured), measured
    else:
        count, pairs = _pairs(store, embedder, namespace, batch_size)
    curve: list[CurvePoint] = []
    for t in sorted(thresholds if thresholds is not None else candidate_thresholds()):
        above = [agree for score, agree in pairs if score >= t]
        precision = sum(above) / len(above) if above else 0.0
        coverage = len(above) / len(pairs) if pairs else 0.0
        curve.append(CurvePoint(t, round(precision, 4), round(coverage, 4), len(above)))
    chosen = next((c for c in curve if c.pairs >= min_support and c.precision >= target_precision), None)
    unproven: str | None = None
    clamped = False
    if chosen is not None:
        # A threshold is only trusted where the data shows precision falling below it: with too
        # few disagreeing pairs under it (narrow data, a few intents) the lowest candidate "passes".
        disagreeing = sum(1 for score, agree in pairs if not agree and score < chosen.threshold)
        if disagreeing < MIN_DISAGREEING:
            unproven = (
                f"not enough disagreeing pairs: {disagreeing} below {chosen.threshold:.2f}, {MIN_DISAGREEING} needed"
                " to show where precision falls (capture more varied traffic)"
            )
            chosen = None
        elif chosen.threshold < CALIBRATION_FLOOR:
            logger.warning(
                "distillkit: calibrated threshold %.2f is below the floor %.2f; using the floor",
                chosen.threshold,
                CALIBRATION_FLOOR,
            )
            chosen = next(c for c in curve if c.threshold >= CALIBRATION_FLOOR)
            clamped = True
    if not pairs:
        reason = "not enough data: no pairs of stored points with answers"
    elif source == "pairs" and not any(agree for _, agree in pairs):
        reason = (
            f"answers never repeat in this namespace, so neighbour pairs measure nothing; {len(measured)} labels of "
            f"the student's own answers, {min_support} needed (the promotion gate and exploration add them)"
        )
    elif unproven is not None:
        reason = unproven
    elif chosen is not None:
        reason = f"lowest threshold with precision >= {target_precision} over >= {min_support} pairs"
        if clamped:
            reason = f"raised to the floor {CALIBRATION_FLOOR} (the lowest threshold that qualified was below it)"
    elif any(c.pairs and c.precision >= target_precision for c in curve):
        reason = f"not enough data: fewer than {min_support} pairs where precision reaches {target_precision}"
    else:
        reason = f"no threshold reaches precision {target_precision}"
    return Calibration(
        namespace=namespace,
        target_precision=target_precision,
        min_support=min_support,
        points=count,
        pairs=len(pairs),
        threshold=chosen.threshold if chosen else None,
        reason=reason,
        curve=curve,
        source=source,
    )
