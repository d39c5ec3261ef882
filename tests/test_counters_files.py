"""The counters files of an embedded store's folder stay one per live process (issue 14 item 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from distillkit.state import ARCHIVE, FOLD_AFTER, fold_published_stats, published_stats


def _exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _publish(folder: Path, name: str, pid: int, requests: int, age: float = 2 * FOLD_AFTER) -> None:
    data = {"pid": pid, "saved_at": time.time() - age, "namespaces": {"ns": {"requests": requests, "routed": 1}}}
    (folder / f"{name}.json").write_text(json.dumps(data))


def test_exited_processes_counters_fold_into_one_file_and_keep_their_totals(tmp_path: Path) -> None:
    for i in range(20):
        _publish(tmp_path, f"gone{i}", _exited_pid(), requests=i)
    _publish(tmp_path, "live", os.getpid(), requests=100)
    _publish(tmp_path, "recent", _exited_pid(), requests=1000, age=1.0)  # may be a live process elsewhere
    before = published_stats(tmp_path)["ns"]

    assert fold_published_stats(tmp_path) == 20
    _publish(tmp_path, "gone-later", _exited_pid(), requests=7)
    assert fold_published_stats(tmp_path) == 1

    assert sorted(p.name for p in tmp_path.glob("*.json")) == [ARCHIVE, "live.json", "recent.json"]
    after = published_stats(tmp_path)["ns"]
    assert (after.requests, after.routed) == (before.requests + 7, before.routed + 1)


def test_a_fold_that_stopped_before_removing_its_files_counts_them_once(tmp_path: Path) -> None:
    _publish(tmp_path, "gone", _exited_pid(), requests=5)
    fold_published_stats(tmp_path)
    archive = json.loads((tmp_path / ARCHIVE).read_text())
    _publish(tmp_path, "gone", 0, requests=5)  # the folded file, as if its removal never happened
    assert archive["folded"] == ["gone.json"]

    assert published_stats(tmp_path)["ns"].requests == 5
    fold_published_stats(tmp_path)
    assert published_stats(tmp_path)["ns"].requests == 5
