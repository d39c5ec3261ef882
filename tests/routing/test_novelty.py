"""The out-of-distribution radius: fitted on trained points in a real store, applied to requests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from distillkit.routing.novelty import Novelty, fit_radius, mean_distance
from distillkit.store import EdgeStore, EmbedderInfo, Point

DIM = 16


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    s = EdgeStore(tmp_path / "store", EmbedderInfo("test", DIM))
    yield s
    s.close()


def cluster(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float) -> list[np.ndarray]:
    return [centre + spread * rng.standard_normal(DIM) for _ in range(n)]


def test_requests_far_from_every_trained_point_are_out_of_distribution(store: EdgeStore) -> None:
    rng = np.random.default_rng(0)
    centre = rng.standard_normal(DIM)
    trained = cluster(rng, centre, 60, 0.3)
    store.upsert(
        [
            Point(str(uuid.uuid4()), {"namespace": "ns", "fingerprint": "f", "indexed": True}, v.tolist())
            for v in trained
        ]
        + [Point(str(uuid.uuid4()), {"namespace": "ns", "fingerprint": "f", "indexed": False}, centre.tolist())]
    )
    novelty = fit_radius(store, "ns")
    assert novelty is not None and novelty.points == 60 and novelty.k == 10  # untrained points do not count
    assert 0.0 < novelty.radius < 0.2

    def scores(query: np.ndarray) -> list[float]:
        hits = store.search(query.tolist(), namespace="ns", fingerprint="f", indexed=True, limit=novelty.k)
        return [hit.score for hit in hits]

    near = cluster(rng, centre, 20, 0.3)
    far = [rng.standard_normal(DIM) for _ in range(20)]
    assert sum(novelty.far(scores(q)) for q in near) <= 1  # the 99.5th percentile: almost never in the cluster
    assert all(novelty.far(scores(q)) for q in far)
    assert novelty.far([])  # no trained neighbour at all
    assert Novelty(**novelty.as_record()) == novelty
    assert mean_distance([1.0, 0.5]) == pytest.approx(0.25)


def test_a_namespace_without_trained_points_has_no_radius(store: EdgeStore) -> None:
    assert fit_radius(store, "empty") is None
