"""Where the qdrant-edge shard (:mod:`distillkit.store._shard`) of an :class:`~distillkit.store.edge.EdgeStore` runs.

qdrant-edge's Python binding holds the GIL for the whole of every call. Building the HNSW index
takes seconds per 20k points, so an engine in the application's process stalls every thread of
it (the request path included) while it indexes. By default the shard therefore lives in a child
process (:class:`ProcessEngine`): the application's threads only wait on a socket, which
releases the GIL, and a search can stop waiting after a timeout (:class:`StoreBusyError`) while
the child builds the index. :class:`InlineEngine` runs the same :class:`Shard` in this process
(``DISTILLKIT_EDGE_ENGINE=inline``), for platforms where a child cannot be started.

Both speak plain Python values (the shard's calls by name). The child is ``python -m
distillkit.store._engine FD``: it serves one call at a time, in the order sent, over the socket
FD (:mod:`multiprocessing.connection` framing), and exits when the socket closes (the
application exited or died) after flushing the shard. It ignores SIGINT: a Ctrl-C meant for the
application must not kill the store under it.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from distillkit.config import EdgeEngine
from distillkit.errors import StoreBusyError, StoreError
from distillkit.store._shard import Shard, WalLockedError

__all__ = ["Engine", "InlineEngine", "ProcessEngine", "open_engine"]


logger = logging.getLogger("distillkit")

# --- where the shard runs ---------------------------------------------------------------------


class Engine:
    """Runs :class:`Shard` calls by name; see :class:`InlineEngine` and :class:`ProcessEngine`."""

    kind: EdgeEngine
    #: The engine's own process id, where it has one.
    pid: int | None = None

    def call(self, op: str, *args: Any, timeout: float | None = None) -> Any:
        """``Shard.<op>(*args)``; ``timeout`` (seconds) bounds the wait only while the index builds.

        Raises:
            StoreBusyError: an index build kept the shard busy past ``timeout``.
            WalLockedError: (opening) another process has the shard.
            Exception: what the shard raised (its type kept where it is a built-in one).
        """
        raise NotImplementedError

    def start_optimize(self) -> None:
        """Build the index; returns at once where the build does not block the caller."""
        raise NotImplementedError

    @property
    def building(self) -> bool:
        """True while an index build started by :meth:`start_optimize` may still run."""
        return False

    def close(self) -> None:
        """Flush and close the shard (waiting for a running build), and end its process."""
        raise NotImplementedError

    def abandon(self) -> object:
        """In a forked child: let go without touching the shard; returns what must stay referenced."""
        return self


class InlineEngine(Engine):
    """The shard in this process: every call holds the GIL, index builds included."""

    kind: EdgeEngine = "inline"

    def __init__(self, folder: str, dim: int) -> None:
        self._shard = Shard(folder, dim)
        self._lock = threading.Lock()

    def call(self, op: str, *args: Any, timeout: float | None = None) -> Any:
        with self._lock:
            return getattr(self._shard, op)(*args)

    def start_optimize(self) -> None:
        self.call("optimize")

    def close(self) -> None:
        self.call("close")


class ProcessEngine(Engine):
    """The shard in a child process, called over a socket; index builds run there, GIL and all.

    Args:
        folder: the shard's folder.
        dim: the vectors' dimension.
        open_timeout: seconds to wait for the child to load the shard (a big one takes seconds).
    """

    kind: EdgeEngine = "process"

    def __init__(self, folder: str, dim: int, *, open_timeout: float = 300.0) -> None:
        ours, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "distillkit.store._engine", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            ours.close()
            raise StoreError(
                f"Could not start the store's engine process ({exc}).",
                fix="Set DISTILLKIT_EDGE_ENGINE=inline to run the engine in this process.",
            ) from exc
        finally:
            theirs.close()
        self.pid = self._process.pid
        self._conn = Connection(ours.detach())
        self._lock = threading.Lock()
        self._lookups = 0  # calls with a timeout waiting for the lock (they go first)
        self._counting = threading.Lock()
        self._seq = 0
        self._optimizing: int | None = None  # the sequence number of a build not answered yet
        try:
            self.call("open", folder, dim, timeout=open_timeout, always=True)
        except StoreBusyError:
            self._stop()
            raise StoreError(f"The store's engine did not open {folder} within {open_timeout:.0f} s.") from None
        except BaseException:
            self._stop()
            raise

    @property
    def building(self) -> bool:
        return self._optimizing is not None

    def call(self, op: str, *args: Any, timeout: float | None = None, always: bool = False) -> Any:
        """See :meth:`Engine.call`; ``always`` applies ``timeout`` even when no build runs.

        A call with a timeout (a routing lookup) goes before calls without one that wait for the
        engine at the same time (capture's), so a lookup waits for at most one call in flight.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if deadline is None:
            while self._lookups:  # let waiting lookups go first
                time.sleep(self.YIELD_S)
            self._lock.acquire()
        else:
            with self._counting:
                self._lookups += 1
            try:
                self._wait(lambda left: self._lock.acquire(timeout=left), deadline, always, op)
            finally:
                with self._counting:
                    self._lookups -= 1
        try:
            seq = self._send(op, args)
            while True:
                if deadline is not None:
                    self._wait(self._conn.poll, deadline, always, op)  # its answer is dropped by a later call
                answered, ok, value = self._conn.recv()
                if answered == self._optimizing:
                    self._optimizing = None
                    if not ok:  # nobody waits for a build: say it failed (the next one tries again)
                        logger.warning("distillkit: the store's index build failed: %s: %s", *value)
                if answered == seq:
                    if ok:
                        return value
                    raise _rebuilt(value)
        finally:
            self._lock.release()

    #: How long a call without a timeout sleeps while lookups wait to go first.
    YIELD_S = 0.0002
    #: How often a wait past its deadline checks whether an index build started meanwhile.
    RECHECK_S = 0.01

    def _wait(self, ready: Callable[[float], bool], deadline: float, always: bool, op: str) -> None:
        """Wait until ``ready(seconds)``; past ``deadline`` give up, but only while a build runs (or ``always``)."""
        while True:
            left = deadline - time.monotonic()
            if ready(max(0.0, left) if left > 0 else self.RECHECK_S):
                return
            if time.monotonic() >= deadline and (always or self.building):
                raise self._busy(op)

    def start_optimize(self) -> None:
        with self._lock:
            if self._optimizing is None:
                self._optimizing = self._send("optimize", ())

    def _send(self, op: str, args: tuple[Any, ...]) -> int:
        self._seq += 1
        self._conn.send((self._seq, op, args))
        return self._seq

    def _busy(self, op: str) -> StoreBusyError:
        return StoreBusyError(f"The store's engine is building its index; the {op} was not answered in time.")

    #: Seconds :meth:`close` waits for a running index build before it interrupts it.
    CLOSE_WAIT = 5.0

    def close(self) -> None:
        """Flush and close the shard; an index build still running after :attr:`CLOSE_WAIT` is cut short.

        Cutting it loses nothing: every upsert is in the write-ahead log already, and the build runs
        again after the next open. Waiting for it could hold a process's exit for a minute.
        """
        try:
            self.call("close", timeout=self.CLOSE_WAIT)
        except StoreBusyError:
            logger.info("distillkit: the store closed during an index build; the build runs again on next open")
            self._process.kill()
        finally:
            self._stop()

    def _stop(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.close()  # the child flushes and exits when its socket closes
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def abandon(self) -> object:
        return (self._conn, self._process)


def open_engine(kind: EdgeEngine, folder: str, dim: int) -> Engine:
    """The shard in ``folder``, run as ``kind`` says (``"process"`` where the platform can)."""
    if kind == "process" and os.name == "posix":
        return ProcessEngine(folder, dim)
    return InlineEngine(folder, dim)


def _rebuilt(error: tuple[str, str]) -> BaseException:
    """The child's exception, rebuilt: built-in types as themselves, others as RuntimeError."""
    name, message = error
    if name == WalLockedError.__name__:
        return WalLockedError(message)
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        with contextlib.suppress(Exception):
            return kind(message)
    return RuntimeError(f"{name}: {message}")


def _serve(conn: Connection) -> None:
    """The child's loop: one call at a time, in order, until ``close`` or the socket closes."""
    shard: Shard | None = None
    closing: int | None = None
    while True:
        try:
            seq, op, args = conn.recv()
        except (EOFError, OSError):  # the application closed its end, or died
            break
        if op == "close":
            closing = seq
            break
        try:
            if op == "open":
                shard, result = Shard(*args), None
            elif shard is None:
                raise RuntimeError("the shard is not open")
            else:
                result = getattr(shard, op)(*args)
            answer: tuple[int, bool, Any] = (seq, True, result)
        except Exception as exc:
            answer = (seq, False, (type(exc).__name__, str(exc)))
        try:
            conn.send(answer)
        except OSError:
            break
    if shard is not None:
        shard.close()
    if closing is not None:
        with contextlib.suppress(OSError):
            conn.send((closing, True, None))  # answered once the shard is flushed and closed
    conn.close()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(Connection(int(sys.argv[1])))
