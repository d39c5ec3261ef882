"""Offline testing helpers: an OpenAI-compatible :class:`Simulator` server and pytest fixtures.

Importing this package needs only the standard library; the ``openai`` SDK is imported when a
client is asked for (:meth:`Simulator.client`, :meth:`Simulator.async_client`).
"""

from __future__ import annotations

from distillkit.testing import extraction
from distillkit.testing.simulator import (
    BASE_MODELS,
    AnswerFn,
    Fault,
    LoggedRequest,
    Reply,
    Simulator,
    default_answer,
)

__all__ = [
    "BASE_MODELS",
    "AnswerFn",
    "Fault",
    "LoggedRequest",
    "Reply",
    "Simulator",
    "default_answer",
    "extraction",
]
