"""Never-seen traffic stays with the teacher: an out-of-distribution deferral by kNN distance.

A request whose nearest trained neighbour is moderately similar may still lie outside everything
the student was trained on: a new intent, an off-task question under the same system prompt. Its
*mean* cosine distance to its ``k`` nearest trained points tells it apart better than the nearest
one alone. :func:`fit_radius` measures, on the namespace's trained points, each point's mean
distance to its ``k`` nearest other trained points of the same task, and keeps the ``PERCENTILE``
-th percentile as the radius; at routing time a request farther than that from its ``k`` nearest
trained neighbours goes to the teacher (reason ``"far from the trained requests"``) and is never
explored, so a label there never blocks an answer class for close paraphrases. (TRACER, 2026,
defers by the same statistic at its 99.5th percentile.) The radius is fitted at each activation
from the points the new model was trained on.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from distillkit.store.base import Store

__all__ = ["PERCENTILE", "K", "Novelty", "fit_radius", "mean_distance"]

#: Neighbours whose mean distance is measured.
K = 10
#: The percentile of the trained points' own mean distances kept as the radius.
PERCENTILE = 99.5
#: Trained points sampled per task to fit the radius (a k-NN over all pairs of them).
SAMPLE = 2000


@dataclass(frozen=True)
class Novelty:
    """A namespace's fitted radius: requests whose mean distance to their ``k`` nearest trained
    neighbours exceeds ``radius`` are out of distribution. ``points``: trained points it was fitted on."""

    radius: float
    k: int
    points: int

    def far(self, scores: Sequence[float]) -> bool:
        """Whether a request with these similarities to its nearest trained neighbours is out of
        distribution (fewer than ``k`` neighbours: the mean of those there are)."""
        if not scores:
            return True
        return mean_distance(scores[: self.k]) > self.radius

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def mean_distance(scores: Sequence[float]) -> float:
    """The mean cosine distance (1 - similarity) over the given neighbour similarities."""
    return float(np.mean([1.0 - float(s) for s in scores])) if scores else 1.0


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def fit_radius(store: Store, namespace: str, *, k: int = K, batch: int = 256, seed: int = 0) -> Novelty | None:
    """The namespace's radius from its trained points (None with fewer than two points of one task)."""
    ids_by_task: dict[Any, list[str]] = defaultdict(list)
    for point in store.scroll(namespace=namespace, indexed=True):
        ids_by_task[point.payload.get("fingerprint")].append(point.id)
    distances: list[float] = []
    rng = random.Random(seed)
    for ids in ids_by_task.values():
        if len(ids) < 2:
            continue
        chosen = rng.sample(ids, SAMPLE) if len(ids) > SAMPLE else ids
        vectors: list[Any] = []
        for start in range(0, len(chosen), batch):
            vectors.extend(p.vector for p in store.retrieve(chosen[start : start + batch], with_vectors=True))
        rows = [v for v in vectors if v is not None]
        if len(rows) < 2:
            continue
        unit = _unit(np.asarray(rows, dtype=np.float32))
        sims = unit @ unit.T
        np.fill_diagonal(sims, -np.inf)  # leave each point out of its own neighbours
        take = min(k, len(rows) - 1)
        nearest = -np.sort(-sims, axis=1)[:, :take]
        distances.extend((1.0 - nearest).mean(axis=1).tolist())
    if not distances:
        return None
    return Novelty(float(np.percentile(distances, PERCENTILE)), k, len(distances))
