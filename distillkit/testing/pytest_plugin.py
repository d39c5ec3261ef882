"""pytest fixtures for testing against the OpenAI-compatible :class:`~distillkit.testing.Simulator`.

Registered as the ``distillkit`` pytest plugin (a ``pytest11`` entry point), so the fixtures are
available in any project that has distillkit installed:

* ``simulator``: a started :class:`~distillkit.testing.Simulator`, stopped after the test.
* ``openai_client``: an ``openai.OpenAI`` client on it (``max_retries=0``).
* ``async_openai_client``: an ``openai.AsyncOpenAI`` client on it, closed after the test.

Without the installed entry point, enable it with ``-p distillkit`` (installed) or
``-p distillkit.testing.pytest_plugin`` (source tree only; not both, pytest refuses one module
registered under two names).

The ``openai`` SDK is imported only when a client fixture is used, so loading the plugin stays cheap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from distillkit.testing.simulator import Simulator

if TYPE_CHECKING:
    import openai

try:  # pytest-asyncio's decorator works in both its "strict" and "auto" modes
    import pytest_asyncio

    _async_fixture: Any = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - without pytest-asyncio async tests cannot run anyway
    _async_fixture = pytest.fixture

__all__ = ["async_openai_client", "openai_client", "simulator"]


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A started :class:`~distillkit.testing.Simulator`, stopped after the test."""
    with Simulator() as sim:
        yield sim


@pytest.fixture
def openai_client(simulator: Simulator) -> Iterator[openai.OpenAI]:
    """An ``openai.OpenAI`` client on the ``simulator`` fixture (``max_retries=0``)."""
    client = simulator.client()
    try:
        yield client
    finally:
        client.close()


@_async_fixture
async def async_openai_client(simulator: Simulator) -> AsyncIterator[openai.AsyncOpenAI]:
    """An ``openai.AsyncOpenAI`` client on the ``simulator`` fixture, closed after the test."""
    client = simulator.async_client()
    try:
        yield client
    finally:
        await client.close()
