"""What only the embedded store does: a private folder that belongs to one process."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from distillkit.errors import StoreError, StoreLockedError
from distillkit.store import EdgeStore

from .conftest import DIM, EMBEDDER, point, vec

REPO = Path(__file__).resolve().parents[2]


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_folder_and_files_are_owner_only(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "store"
    with EdgeStore(root, EMBEDDER) as store:
        store.upsert([point(vec(rng))])
        store.put_record("model", "ns", {"model": "ft:x"})

    for folder in (root, root / "distillkit", root / "distillkit" / "shard"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for name in ("manifest.json", "records.sqlite"):
        assert stat.S_IMODE((root / "distillkit" / name).stat().st_mode) == 0o600, name
    manifest = json.loads((root / "distillkit" / "manifest.json").read_text())
    assert manifest["embedder"] == {"name": EMBEDDER.name, "dim": EMBEDDER.dim}
    assert not [p for p in (root / "distillkit").iterdir() if p.name.endswith(".tmp")]


def test_second_process_gets_a_clear_locked_error(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with EdgeStore(root, EMBEDDER):
        result = _run(
            """
            import sys
            from distillkit.errors import StoreLockedError
            from distillkit.store import EdgeStore, EmbedderInfo
            try:
                EdgeStore(sys.argv[1], EmbedderInfo("test-embedder", 8))
            except StoreLockedError as exc:
                print("LOCKED:", exc)
                sys.exit(3)
            """,
            str(root),
        )
    assert result.returncode == 3, result.stderr
    assert "QDRANT_URL" in result.stdout and "server" in result.stdout

    # Once the first process lets go, another one may open the folder.
    assert (
        _run(
            "import sys; from distillkit.store import EdgeStore, EmbedderInfo; "
            "EdgeStore(sys.argv[1], EmbedderInfo('test-embedder', 8)).close()",
            str(root),
        ).returncode
        == 0
    )


def test_second_open_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with EdgeStore(tmp_path, EMBEDDER), pytest.raises(StoreLockedError, match="QDRANT_URL"):
        EdgeStore(tmp_path, EMBEDDER)
    EdgeStore(tmp_path, EMBEDDER).close()  # the lock is released on close


def test_upserts_survive_a_crash_without_close(tmp_path: Path) -> None:
    result = _run(
        """
        import os, sys, uuid
        from distillkit.store import EdgeStore, EmbedderInfo, Point
        store = EdgeStore(sys.argv[1], EmbedderInfo("test-embedder", 8))
        ids = [str(uuid.uuid4()) for _ in range(50)]
        store.upsert([Point(i, {"namespace": "ns", "indexed": False}, [1.0] * 8) for i in ids])
        store.set_payload(ids[:10], {"indexed": True})
        store.put_record("job", "ns", {"id": "job-1"})
        os._exit(0)  # no close, no flush, no atexit
        """,
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr

    with EdgeStore(tmp_path, EMBEDDER) as store:
        assert store.count(namespace="ns") == 50
        assert store.count(namespace="ns", indexed=True) == 10
        assert store.get_record("job", "ns") == {"id": "job-1"}


def test_threads_search_while_a_writer_upserts(tmp_path: Path, rng: np.random.Generator) -> None:
    store = EdgeStore(tmp_path, EMBEDDER)
    store.upsert([point(vec(rng)) for _ in range(200)])
    errors: list[BaseException] = []
    done = threading.Event()
    queries = rng.standard_normal((50, DIM)).tolist()
    batches = [[point(v) for v in rng.standard_normal((16, DIM)).tolist()] for _ in range(40)]

    def reader() -> None:
        try:
            while not done.is_set():
                for q in queries:
                    assert store.search(q, namespace="ns", fingerprint="fp", indexed=False, limit=4)
        except BaseException as exc:
            errors.append(exc)

    def writer() -> None:
        try:
            for batch in batches:
                store.upsert(batch)
                store.set_payload([batch[0].id], {"indexed": True})
                store.put_record("job", batch[0].id, {"n": 1})
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    store.close()

    assert errors == []
    with EdgeStore(tmp_path, EMBEDDER) as again:
        assert again.count() == 200 + 40 * 16
        assert again.count(indexed=True) == 40
        assert len(again.list_records("job")) == 40


def test_optimize_builds_the_index_and_search_still_finds_points(tmp_path: Path, rng: np.random.Generator) -> None:
    with EdgeStore(tmp_path, EMBEDDER, optimize_every=None) as store:
        points = [point(v) for v in rng.standard_normal((500, DIM)).tolist()]
        store.upsert(points)
        store.optimize()
        hit = store.search(points[7].vector or [], namespace="ns")[0]
        assert hit.id == points[7].id


def test_a_closed_store_raises_store_error(tmp_path: Path, rng: np.random.Generator) -> None:
    store = EdgeStore(tmp_path, EMBEDDER)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.search(vec(rng), namespace="ns")


def test_an_unusable_folder_raises_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError) as info:
        EdgeStore(blocker, EMBEDDER)
    assert isinstance(info.value.__cause__, OSError)


def test_a_record_write_never_holds_up_a_search(tmp_path: Path, rng: np.random.Generator) -> None:
    with EdgeStore(tmp_path / "s", EMBEDDER) as store:
        stored = point(vec(rng))
        store.upsert([stored])
        other = sqlite3.connect(tmp_path / "s" / "distillkit" / "records.sqlite", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the records database is busy: a record write waits for it
        writer = threading.Thread(target=store.put_record, args=("job", "ns", {"point_ids": ["a"] * 1000}))
        writer.start()
        try:
            writer.join(0.2)  # let it start waiting
            hits = store.search(stored.vector, namespace="ns", limit=1)
            assert writer.is_alive(), "the record write should still be waiting"
            assert [h.id for h in hits] == [stored.id]
        finally:
            other.execute("COMMIT")
            other.close()
            writer.join()
        assert store.get_record("job", "ns") == {"point_ids": ["a"] * 1000}


def test_records_of_an_older_folder_move_to_sqlite_and_survive_reopening(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "s", EMBEDDER):
        pass
    legacy = tmp_path / "s" / "distillkit" / "records.json"
    legacy.write_text(json.dumps({"model": {"ns": {"model": "ft:1"}}, "job": {"ns": {"job_id": "j"}}}))

    with EdgeStore(tmp_path / "s", EMBEDDER) as store:
        assert store.get_record("model", "ns") == {"model": "ft:1"}
        store.put_record("job", "ns", {"job_id": "k"})
        store.delete_record("model", "ns")
    assert not legacy.exists()
    with EdgeStore(tmp_path / "s", EMBEDDER) as store:
        assert store.list_records("job") == {"ns": {"job_id": "k"}}
        assert store.get_record("model", "ns") is None
