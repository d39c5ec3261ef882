"""The capture writer: batches off the caller's thread, bounded, drops the oldest, flushes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from distillkit.capture.writer import CaptureWriter


def test_items_arrive_in_batches_in_order() -> None:
    batches: list[list[int]] = []
    writer: CaptureWriter[int] = CaptureWriter(lambda b: batches.append(list(b)), batch_size=4)
    for i in range(10):
        writer.submit(i)
    assert writer.flush(5)
    assert [i for b in batches for i in b] == list(range(10))
    assert max(len(b) for b in batches) <= 4
    writer.close()


def test_full_queue_drops_the_oldest_without_blocking() -> None:
    release = threading.Event()
    written: list[int] = []
    dropped: list[tuple[int, str]] = []

    def slow_sink(batch: Sequence[int]) -> None:
        release.wait(5)
        written.extend(batch)

    writer: CaptureWriter[int] = CaptureWriter(
        slow_sink, max_queue=3, batch_size=1, on_drop=lambda item, why: dropped.append((item, why))
    )
    writer.submit(0)  # taken by the writer thread, which then blocks in the sink
    time.sleep(0.1)
    started = time.perf_counter()
    for i in range(1, 7):
        writer.submit(i)
    assert time.perf_counter() - started < 0.05  # the caller never waits for the store
    release.set()
    assert writer.flush(5)
    assert written == [0, 4, 5, 6]
    assert dropped == [(1, "capture queue full"), (2, "capture queue full"), (3, "capture queue full")]
    writer.close()


def test_a_failing_sink_is_reported_as_drops_and_the_writer_goes_on() -> None:
    dropped: list[str] = []
    calls = []

    def sink(batch: Sequence[int]) -> None:
        calls.append(list(batch))
        if len(calls) == 1:
            raise OSError("disk full")

    writer: CaptureWriter[int] = CaptureWriter(sink, batch_size=1, on_drop=lambda item, why: dropped.append(why))
    writer.submit(1)
    assert writer.flush(5)
    writer.submit(2)
    assert writer.flush(5)
    assert calls == [[1], [2]]
    assert dropped == ["store error: disk full"]
    writer.close()


def test_interpreter_exit_flushes_the_queue(tmp_path: Path) -> None:
    out = tmp_path / "written.txt"
    script = textwrap.dedent(
        f"""
        import time
        from distillkit.capture.writer import CaptureWriter

        def sink(batch):
            time.sleep(0.05)  # slower than the main thread, which exits at once
            with open({str(out)!r}, "a") as f:
                f.writelines(f"{{i}}\\n" for i in batch)

        writer = CaptureWriter(sink, batch_size=10)
        for i in range(50):
            writer.submit(i)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert out.read_text().split() == [str(i) for i in range(50)]
