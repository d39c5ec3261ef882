"""Exit and fork hooks for every live :class:`~distillkit.Distiller`, registered once per process.

At interpreter exit each Distiller stores what is queued and saves its counters; around a fork
the parent lets go of an embedded store (so that one forked worker can own it) and the child
starts clean. The hooks hold no strong reference: a Distiller dropped by the program is forgotten.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import Protocol

__all__ = ["register"]

logger = logging.getLogger("distillkit")


class _Hooked(Protocol):
    def _at_exit(self) -> None: ...
    def _before_fork(self) -> None: ...
    def _after_fork_in_child(self) -> None: ...


_live: weakref.WeakSet[_Hooked] = weakref.WeakSet()
_hooks_lock = threading.Lock()
_hooks_registered = False
_finalizer_pid: int | None = None


def register(distiller: _Hooked) -> None:
    """Exit and fork hooks for every Distiller, registered once, holding no strong reference."""
    global _hooks_registered, _finalizer_pid
    with _hooks_lock:
        _live.add(distiller)
        if _finalizer_pid != os.getpid():  # first Distiller in a multiprocessing child, too
            _finalizer_pid = os.getpid()
            _finalize_in_child(None)
        if not _hooks_registered:
            _hooks_registered = True
            atexit.register(_each, "_at_exit")
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(
                    before=lambda: _each("_before_fork"), after_in_child=lambda: _each("_after_fork_in_child")
                )
                import multiprocessing.util

                # A multiprocessing child started with fork leaves through os._exit: atexit never runs
                # there, multiprocessing's own finalizers do (registered afresh in each such child).
                multiprocessing.util.register_after_fork(_HOOKS, _finalize_in_child)


class _Hooks:
    """A weak-referenceable owner for multiprocessing's after-fork registry."""


_HOOKS = _Hooks()


def _finalize_in_child(_: object) -> None:
    global _finalizer_pid
    import multiprocessing.util

    _finalizer_pid = os.getpid()

    multiprocessing.util.Finalize(None, _each, args=("_at_exit",), exitpriority=100)


def _each(method: str) -> None:
    for distiller in list(_live):
        try:
            getattr(distiller, method)()
        except Exception:  # a hook must never break the exit or the fork
            logger.warning("distillkit: %s failed", method.strip("_"), exc_info=True)
