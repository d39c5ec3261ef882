"""Where captured interactions live: the :class:`Store` protocol and its two backends.

* :class:`EdgeStore`: embedded (Qdrant Edge) in a local folder, owned by one process; the default.
* :class:`ServerStore`: a Qdrant server or cluster through qdrant-client, shared by many processes.
* :class:`~distillkit.store.resilient.ResilientStore`: the Distiller's handle, which reopens a
  store that failed.

The backends are imported on first use: qdrant-client alone takes about half a second to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distillkit.store.base import EmbedderInfo, Hit, Point, Store

if TYPE_CHECKING:
    from distillkit.store.edge import EdgeStore
    from distillkit.store.server import ServerStore

__all__ = ["EdgeStore", "EmbedderInfo", "Hit", "Point", "ServerStore", "Store"]

_LAZY = {"EdgeStore": "distillkit.store.edge", "ServerStore": "distillkit.store.server"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
