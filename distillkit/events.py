"""Hooks a program can observe: a routing decision, a stored capture, a lost capture.

A failing callback is logged as a warning, never raised: an observer must not break a call.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from distillkit.errors import ConfigError

__all__ = ["EVENTS", "Events"]

logger = logging.getLogger("distillkit")

#: Hook names accepted by :meth:`Events.on` (and :meth:`Distiller.on <distillkit.Distiller.on>`).
EVENTS = ("decision", "capture", "drop")


class Events:
    """Callbacks by event name."""

    def __init__(self) -> None:
        self._hooks: defaultdict[str, list[Callable[..., Any]]] = defaultdict(list)

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Call ``callback`` on ``event``; returns it, so this works as a decorator."""
        if event not in EVENTS:
            raise ConfigError(f"Unknown event {event!r}.", variable="event", fix=f"Use one of {', '.join(EVENTS)}.")
        self._hooks[event].append(callback)
        return callback

    def observed(self, event: str) -> bool:
        """Whether any callback listens to ``event`` (to skip building its arguments)."""
        return bool(self._hooks.get(event))

    def emit(self, event: str, *args: Any) -> None:
        for callback in self._hooks.get(event, ()):
            try:
                callback(*args)
            except Exception:
                logger.warning("distillkit %r hook %r failed", event, callback, exc_info=True)
