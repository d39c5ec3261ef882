"""Issue 14 item 13d: the training lease is held for the whole of a slow upload."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from _support import ask

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.testing import Simulator


def test_the_lease_is_renewed_during_a_slow_upload(simulator: Simulator, tmp_path: Path) -> None:
    distiller = Distiller(DistillConfig(path=str(tmp_path / "store"), min_examples=10, holdout=0.0))
    try:
        client = distillkit.wrap(simulator.client(), distiller)
        for i in range(12):
            ask(client, f"Where is my card number {i}?")
        assert distiller.flush(10)
        distiller.trainer.LOCK_TTL_S = 1.0  # type: ignore[misc]  # a short lease, an upload three times longer
        simulator.inject("files", latency=3.0)
        taken_by_other: list[bool] = []

        def other_process() -> None:
            time.sleep(2.0)  # the upload is under way, past the first lease's end
            taken_by_other.append(distiller.store.try_lock("train:default", "another-process", 60.0))

        intruder = threading.Thread(target=other_process)
        intruder.start()
        [round_] = distiller.train_now()
        intruder.join(10)
        assert round_.job_id, round_.reason
        assert taken_by_other == [False]
    finally:
        distiller.close()
