"""Fixtures that open each store backend on a real engine in a temporary folder."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distillkit.store import EdgeStore, EmbedderInfo, Point, ServerStore, Store

DIM = 8
EMBEDDER = EmbedderInfo("test-embedder", DIM)


class Backend:
    """Opens a store of one kind on the same storage again and again (to test reopening)."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self._client: Any = None
        self._stores: list[Store] = []

    def open(self, embedder: EmbedderInfo = EMBEDDER) -> Store:
        if self.kind == "edge":
            store: Store = EdgeStore(self.root / "edge", embedder)
        else:
            from qdrant_client import QdrantClient

            if self._client is None:
                self._client = QdrantClient(path=str(self.root / "qdrant"))
            store = ServerStore(embedder, client=self._client)
        self._stores.append(store)
        return store

    def close_all(self) -> None:
        """Close every store and, for the server, the client: what a process exit does."""
        for store in self._stores:
            store.close()
        self._stores.clear()
        if self._client is not None:
            self._client.close()
            self._client = None

    def reopen(self, embedder: EmbedderInfo = EMBEDDER) -> Store:
        self.close_all()
        return self.open(embedder)


@pytest.fixture(params=["edge", "server"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path)
    yield b
    b.close_all()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def vec(rng: np.random.Generator) -> list[float]:
    """A random unit-free vector of the test dimension."""
    return rng.standard_normal(DIM).tolist()


def point(
    vector: Sequence[float],
    *,
    namespace: str = "ns",
    fingerprint: str = "fp",
    indexed: bool = False,
    **extra: Any,
) -> Point:
    """A captured point with a fresh UUID id."""
    payload = {"namespace": namespace, "fingerprint": fingerprint, "indexed": indexed, **extra}
    return Point(str(uuid.uuid4()), payload, list(vector))
