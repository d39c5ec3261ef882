"""The embedded store's engine in its child process: index builds never hold the application."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from distillkit.errors import StoreBusyError, StoreError
from distillkit.store import EdgeStore, EmbedderInfo

from .conftest import EMBEDDER, point, vec
from .test_edge import _run

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the engine runs in a child process on POSIX")


def _gone(pid: int, within: float = 60.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # our own child: reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False


def test_the_engine_runs_in_a_child_process_that_ends_with_the_store(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "store", EMBEDDER)
    pid = store.engine_pid
    assert store.engine == "process" and pid is not None and pid != os.getpid()
    store.close()
    assert _gone(pid)


def test_a_lookup_waits_at_most_its_timeout_while_the_index_builds(tmp_path: Path, rng: np.random.Generator) -> None:
    with EdgeStore(tmp_path / "store", EMBEDDER, optimize_every=None) as store:
        stored = [point(vec(rng)) for _ in range(20)]
        store.upsert(stored)
        pid = store.engine_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # the engine cannot answer: as if the build took long
        try:
            store.optimize(wait=False)
            with pytest.raises(StoreBusyError):
                store.search(stored[0].vector, namespace="ns", limit=1, timeout=0.05)
        finally:
            os.kill(pid, signal.SIGCONT)
        # Without a timeout a search waits for the build; then every later one is answered again.
        assert store.search(stored[0].vector, namespace="ns", limit=1)[0].id == stored[0].id
        assert store.search(stored[1].vector, namespace="ns", limit=1, timeout=0.05)[0].id == stored[1].id
        assert store.count() == 20


def test_no_timeout_applies_while_no_index_builds(tmp_path: Path, rng: np.random.Generator) -> None:
    with EdgeStore(tmp_path / "store", EMBEDDER) as store:
        stored = point(vec(rng))
        store.upsert([stored])
        pid = store.engine_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        resumed = threading.Timer(0.3, os.kill, (pid, signal.SIGCONT))
        resumed.start()
        # A slow engine that is not building (a loaded machine) is waited for: no spurious teacher calls.
        assert store.search(stored.vector, namespace="ns", limit=1, timeout=0.01)[0].id == stored.id
        resumed.join()


def test_a_dead_engine_is_a_store_error_and_the_folder_opens_again(tmp_path: Path, rng: np.random.Generator) -> None:
    stored = point(vec(rng))
    store = EdgeStore(tmp_path / "store", EMBEDDER)
    store.upsert([stored])
    pid = store.engine_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(StoreError):
        store.search(stored.vector, namespace="ns", limit=1)
    with pytest.raises(StoreError):
        store.close()
    with EdgeStore(tmp_path / "store", EMBEDDER) as again:  # what was upserted is in the WAL
        assert again.retrieve([stored.id])[0].id == stored.id


def test_the_engine_exits_when_the_application_dies_without_closing(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    result = _run(
        """
        import os, sys
        from distillkit.store import EdgeStore, EmbedderInfo, Point
        store = EdgeStore(sys.argv[1], EmbedderInfo("test-embedder", 8))
        store.upsert([Point("00000000-0000-0000-0000-000000000001", {"namespace": "ns"}, [1.0] * 8)])
        print(store.engine_pid, flush=True)
        os._exit(0)  # no close, no atexit
        """,
        str(folder),
    )
    assert result.returncode == 0, result.stderr
    assert _gone(int(result.stdout.strip()))
    with EdgeStore(folder, EMBEDDER) as store:
        assert store.count(namespace="ns") == 1


def test_the_inline_engine_keeps_the_same_contract(tmp_path: Path, rng: np.random.Generator) -> None:
    with EdgeStore(tmp_path / "store", EMBEDDER, engine="inline", optimize_every=5) as store:
        assert store.engine == "inline" and store.engine_pid is None
        stored = [point(vec(rng)) for _ in range(6)]
        store.upsert(stored)  # builds the index here, before returning
        assert store.search(stored[3].vector, namespace="ns", limit=1, timeout=0.01)[0].id == stored[3].id


def test_an_upsert_past_optimize_every_starts_a_build_without_waiting_for_it(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    with EdgeStore(tmp_path / "store", EMBEDDER, optimize_every=10) as store:
        store.upsert([point(vec(rng)) for _ in range(9)])
        assert not store.indexing
        stored = point(vec(rng))
        store.upsert([stored])  # the 10th unindexed point: a build starts, and upsert returns
        assert store.indexing  # (lookups meanwhile wait at most their timeout: the test above)
        assert store.search(stored.vector, namespace="ns", limit=1)[0].id == stored.id
        assert not store.indexing  # the build's end was read on the way


def test_closing_during_a_long_build_interrupts_it_and_loses_nothing(tmp_path: Path, rng: np.random.Generator) -> None:
    stored = [point(vec(rng)) for _ in range(30)]
    store = EdgeStore(tmp_path / "store", EMBEDDER, optimize_every=None)
    store.upsert(stored)
    pid = store.engine_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a build that would outlast the close's patience
    store.optimize(wait=False)
    store.close()  # returns after CLOSE_WAIT instead of waiting the build out
    assert _gone(pid)
    with EdgeStore(tmp_path / "store", EMBEDDER) as again:
        assert again.count() == 30
        assert again.search(stored[7].vector, namespace="ns", limit=1)[0].id == stored[7].id


def test_index_builds_leave_no_replaced_segments_behind(tmp_path: Path, rng: np.random.Generator) -> None:
    wide = EmbedderInfo("test-embedder-64", 64)  # enough data for the engine to merge segments
    with EdgeStore(tmp_path / "store", wide, optimize_every=None) as store:
        segments = tmp_path / "store" / "distillkit" / "shard" / "segments"
        for _ in range(2):
            store.upsert([point(rng.standard_normal(64).tolist()) for _ in range(20_000)])
            store.optimize()
        # One segment (and one for new points): each build's replaced segments are gone.
        assert len(list(segments.iterdir())) <= 2
        assert store.count() == 40_000
