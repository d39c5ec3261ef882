"""At most one job per namespace: across trainers sharing a server store, and across restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from qdrant_client import QdrantClient

from distillkit import DistillConfig, Distiller
from distillkit.store import EdgeStore, ServerStore
from distillkit.testing import Simulator
from distillkit.training import OpenAIFineTuningProvider, Trainer, TrainingRound

from .conftest import EMBEDDER, add_points, make_trainer


def test_two_trainers_sharing_a_server_store_start_one_job_per_namespace(sim: Simulator) -> None:
    store = ServerStore(EMBEDDER, client=QdrantClient(location=":memory:"))
    for ns in ("a", "b", "c"):
        add_points(store, 10, namespace=ns)
    trainers = [make_trainer(store, sim, owner=f"process-{i}") for i in range(2)]
    barrier = threading.Barrier(len(trainers))
    results: list[list[TrainingRound]] = []

    def run(trainer: Trainer) -> None:
        barrier.wait()
        results.append(trainer.tick())

    threads = [threading.Thread(target=run, args=(t,)) for t in trainers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    started = [r for rounds in results for r in rounds if r.status == "started"]
    assert sorted(r.namespace for r in started) == ["a", "b", "c"]
    assert len(sim.jobs) == 3
    assert {r.status for rounds in results for r in rounds} <= {"started", "running", "skipped"}

    # Either trainer finishes the jobs; both then agree, and nothing starts twice.
    sim.finish_jobs()
    done = trainers[1].wait(started, timeout=5)
    assert [r.status for r in done] == ["succeeded"] * 3
    assert [r.status for r in trainers[0].tick()] == []  # nothing pending, nothing in flight
    assert store.count(indexed=True) == 30
    assert len(sim.jobs) == 3


_CHILD = r"""
import os, signal, sys
import openai
from distillkit import DistillConfig, Distiller
from distillkit.store import EdgeStore, EmbedderInfo
from distillkit.training import OpenAIFineTuningProvider

path, base_url = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="sk-simulator", max_retries=0)
distiller = Distiller(
    DistillConfig(path=path, min_examples=10),
    store=EdgeStore(path, EmbedderInfo("test-embedder", 8)),
    fine_tuning_provider=OpenAIFineTuningProvider(client),
)
[round_] = distiller.train_now()
print(round_.status, round_.job_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit: a crash
"""


def test_a_killed_process_job_is_resumed_after_restart(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = EdgeStore(path, EMBEDDER)
    captured = add_points(store, 12)  # 10 to train on, 2 held out for the promotion gate
    store.close()
    # The candidate answers the held-out points as the stored teacher did.
    sim.student_answer = lambda body: body["messages"][-1]["content"].replace("question", "answer")

    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), sim.base_url], capture_output=True, text=True, timeout=60
    )

    assert child.returncode == -signal.SIGKILL, child.stderr
    status, job_id = child.stdout.split()
    assert status == "started" and list(sim.jobs) == [job_id]

    sim.job_step_seconds = 0.01  # the job moves on while nobody watches
    distiller = Distiller(
        DistillConfig(path=str(path), min_examples=10),
        store=EdgeStore(path, EMBEDDER),
        fine_tuning_provider=OpenAIFineTuningProvider(sim.client()),
    )
    try:
        [resumed] = distiller.train_now(wait=True, timeout=10)

        assert resumed.status == "succeeded" and resumed.job_id == job_id
        assert resumed.evaluation is not None and resumed.evaluation["verdict"] == "promoted"
        assert list(sim.jobs) == [job_id] and len(sim.files) == 1
        store = distiller.store
        assert store.count(indexed=True) == 10 and resumed.held_out == 2
        trained = [p.id for p in store.retrieve(captured) if p.payload["indexed"]]
        assert all(p.payload["job_id"] == job_id for p in store.retrieve(trained))
        active = distiller.registry.get("ns")
        assert active is not None and active.model == resumed.model
    finally:
        distiller.close()
    assert os.path.exists(path)
