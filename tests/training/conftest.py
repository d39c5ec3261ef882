"""Fixtures for the training tests: the simulator over HTTP, real stores, captured points."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distillkit import DistillConfig
from distillkit.state import ModelRegistry
from distillkit.store import EdgeStore, EmbedderInfo, Point, Store
from distillkit.testing import Simulator
from distillkit.training import OpenAIDatasetProvider, OpenAIFineTuningProvider, Trainer

DIM = 8
EMBEDDER = EmbedderInfo("test-embedder", DIM)
_rng = np.random.default_rng(7)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator whose jobs move only when the test says so (``tick`` / ``finish_jobs``)."""
    with Simulator() as s:
        yield s


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    s = EdgeStore(tmp_path / "store", EMBEDDER)
    yield s
    s.close()


def payload(i: int, namespace: str = "ns", **extra: Any) -> dict[str, Any]:
    """A captured interaction as the capture writer stores it."""
    return {
        "namespace": namespace,
        "fingerprint": "fp",
        "query": f"question {i}",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": f"question {i}"},
        ],
        "params": {"model": "gpt-4.1", "temperature": 0},
        "response": {"role": "assistant", "content": f"answer {i}"},
        "teacher_model": "gpt-4.1",
        "usage": None,
        "created_at": time.time(),
        "indexed": False,
        "distilled_model": None,
        "job_id": None,
        "count": 1,
        **extra,
    }


def add_points(store: Store, n: int, namespace: str = "ns", start: int = 0) -> list[str]:
    """Store ``n`` captured points; returns their ids."""
    points = [
        Point(str(uuid.uuid4()), payload(i, namespace), _rng.standard_normal(DIM).tolist())
        for i in range(start, start + n)
    ]
    store.upsert(points)
    return [p.id for p in points]


def make_trainer(store: Store, sim: Simulator, *, owner: str | None = None, **config: Any) -> Trainer:
    settings: dict[str, Any] = {"path": "unused", "min_examples": 10, **config}
    return Trainer(
        store=lambda: store,
        registry=ModelRegistry(lambda: store),
        config=DistillConfig(**settings),
        dataset_provider=OpenAIDatasetProvider(),
        fine_tuning_provider=OpenAIFineTuningProvider(sim.client()),
        owner=owner,
    )


def payloads(store: Store, namespace: str = "ns") -> dict[str, dict[str, Any]]:
    return {p.id: p.payload for p in store.scroll(namespace=namespace)}
