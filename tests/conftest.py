"""Shared fixtures: a real simulator over HTTP, a real embedded store in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import distillkit
from distillkit import DistillConfig, Distiller, intercept
from distillkit.testing import Simulator


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The LoRA workers' base-model cache: one per test session, never the user's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTILLKIT_CACHE_DIR", str(tmp_path_factory.mktemp("distillkit-cache")))
        yield


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no patches, no wrapped clients and a default store in a temp folder."""
    monkeypatch.setenv("DISTILLKIT_PATH", str(tmp_path_factory.mktemp("default-store")))
    for name in ("DISTILLKIT_THRESHOLD", "DISTILLKIT_NAMESPACE", "DISTILLKIT_EMBEDDER", "QDRANT_URL"):
        monkeypatch.delenv(name, raising=False)
    yield
    previous = distillkit.set_default_distiller(None)
    if previous is not None:
        previous.close()
    intercept._wrapped_clients.clear()
    intercept._Scopes.active = 0
    intercept.uninstall()


@pytest.fixture
def config(tmp_path: Any) -> DistillConfig:
    return DistillConfig(path=str(tmp_path / "store"), min_examples=10)


@pytest.fixture
def distiller(config: DistillConfig) -> Iterator[Distiller]:
    d = Distiller(config)
    yield d
    d.close()


@pytest.fixture
def client(simulator: Simulator, distiller: Distiller) -> Iterator[Any]:
    """A wrapped sync client on the simulator."""
    c = distillkit.wrap(simulator.client(), distiller)
    yield c
    distillkit.unwrap(c)
    c.close()


from _support import Captures  # noqa: E402


@pytest.fixture
def captures(distiller: Distiller) -> Captures:
    return Captures(distiller)
