"""Several worker processes sharing one embedded store folder (gunicorn, uvicorn --workers, multiprocessing).

Three workers, started with ``fork`` and with ``spawn``, with and without a parent that used
distillkit before starting them. Every request gets the teacher's answer; every capture is stored
or counted as dropped; the counters every process published add up in ``status``.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing as mp
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import distillkit
from distillkit import DistillConfig, Distiller, cli
from distillkit.testing import Simulator

_DRIVER = textwrap.dedent(
    """
    import json, multiprocessing as mp, sys
    import openai
    import distillkit
    from distillkit import DistillConfig, Distiller

    base_url, path, method, warm = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "warm"
    N = 6
    TOPICS = ["card delivery", "account closing", "refund policy", "mortgage rates", "travel insurance",
              "pin reset", "stock trading", "loan application", "currency exchange", "fraud report"]
    parent = None  # (distiller, client) when the parent used distillkit before starting workers


    def work(index, out):
        # Forked from a parent that used it: the inherited Distiller (its writer, counters and store
        # handle). The client is the worker's own: an HTTP connection kept alive in the parent must
        # not be shared by forked children, with or without distillkit.
        distiller = parent[0] if parent is not None else Distiller(DistillConfig(path=path))
        client = distillkit.wrap(openai.OpenAI(base_url=base_url, api_key="sk-w", max_retries=0), distiller)
        plain = openai.OpenAI(base_url=base_url, api_key="sk-w", max_retries=0)
        right = 0
        for i in range(N):
            q = TOPICS[(i + 3 * index) % 10]
            messages = [{"role": "user", "content":
                         f"Worker {index} question {i}: {q} for customer {index * 7919 + i}"}]
            got = client.chat.completions.create(model="gpt-4.1", messages=messages)
            want = plain.chat.completions.create(model="gpt-4.1", messages=messages)
            right += got.choices[0].message.content == want.choices[0].message.content
        flushed = distiller.flush(120)
        stats = distiller.stats().get("default")
        out.put({"index": index, "right": right, "flushed": flushed, **(stats.as_dict() if stats else {})})
        # leaves without close(): the exit hook must store what is queued and save the counters


    if __name__ == "__main__":
        if warm:
            distiller = Distiller(DistillConfig(path=path))
            client = distillkit.wrap(openai.OpenAI(base_url=base_url, api_key="sk-p", max_retries=0), distiller)
            client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "warm-up call"}])
            assert distiller.flush(60)
            if method == "fork":
                parent = (distiller, client)
        ctx = mp.get_context(method)
        out = ctx.Queue()
        workers = [ctx.Process(target=work, args=(i, out)) for i in range(3)]
        for w in workers:
            w.start()
        results = [out.get(timeout=300) for _ in workers]
        for w in workers:
            w.join(300)
        print(json.dumps({"results": results, "exitcodes": [w.exitcode for w in workers]}), flush=True)
    """
)

N = 6


@pytest.mark.parametrize("warm", ["cold", "warm"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_three_workers_share_one_folder(simulator: Simulator, tmp_path: Path, method: str, warm: str) -> None:
    path = str(tmp_path / "store")
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    run = subprocess.run(
        [sys.executable, str(driver), simulator.base_url, path, method, warm],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["exitcodes"] == [0, 0, 0]
    results = report["results"]
    assert [r["right"] for r in results] == [N] * 3  # every request got the teacher's answer
    assert all(r["flushed"] for r in results)
    for r in results:
        assert r["requests"] == N
        # nothing lost without being counted
        assert r["captured"] + r["dropped"] + r["deduplicated"] + r["skipped"] == N, r
    parent_requests = 1 if warm == "warm" else 0
    distiller = Distiller(DistillConfig(path=path))
    try:
        stored = distiller.store.count(namespace="default")
        row = distiller.status()["default"]
    finally:
        distiller.close()
    captured = sum(r["captured"] for r in results) + parent_requests
    assert stored == captured
    # what every process published adds up (the exit hook saved each one's counters)
    assert row["requests"] == 3 * N + parent_requests
    assert row["captured"] == captured
    assert row["dropped"] == sum(r["dropped"] for r in results)


def _open_at_once(path: str, barrier: Any, out: Any) -> None:
    from distillkit.errors import StoreError, StoreLockedError
    from distillkit.store.base import EmbedderInfo
    from distillkit.store.edge import EdgeStore

    barrier.wait(60)
    try:
        store = EdgeStore(path, EmbedderInfo("test", 8))
    except StoreLockedError:
        out.put("locked")
        return
    except StoreError as exc:
        out.put(f"error: {exc}")
        return
    out.put("owner")
    barrier.wait(60)  # hold it until every process has tried
    store.close()


def test_processes_opening_a_new_folder_at_once_have_exactly_one_owner(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    for trial in range(8):
        path = str(tmp_path / f"store{trial}")
        barrier, out = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier, out)) for _ in range(3)]
        for p in procs:
            p.start()
        outcomes = sorted(out.get(timeout=120) for _ in procs)
        barrier.abort()  # release the owner
        for p in procs:
            p.join(60)
        assert outcomes == ["locked", "locked", "owner"], outcomes


def test_a_worker_that_cannot_own_the_folder_says_so_once_and_counts_its_drops(
    simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store"
    owner = Distiller(DistillConfig(path=str(path)))
    owner.store  # noqa: B018 - the owner process holds the folder
    worker = Distiller(DistillConfig(path=str(path)), store_backoff=(0.0, 0.0))
    client = distillkit.wrap(simulator.client(), worker)
    try:
        with caplog.at_level(logging.DEBUG, logger="distillkit"):
            for i in range(5):
                reply = client.chat.completions.create(
                    model="gpt-4.1", messages=[{"role": "user", "content": f"question number {i} about refunds"}]
                )
                assert reply.choices[0].message.content
                assert worker.flush(60)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, warnings
        assert str(path) in warnings[0] and "QDRANT_URL" in warnings[0]
        assert worker.stats()["default"].dropped == 5
    finally:
        distillkit.unwrap(client)
        worker.close()
    # visible in `distillkit status`, run while the owner still holds the store
    monkeypatch.setenv("DISTILLKIT_PATH", str(path))
    out = io.StringIO()
    assert cli.main(["status", "--json"], out=out) == 0
    assert json.loads(out.getvalue())["default"]["dropped"] == 5
    assert owner.status()["default"]["dropped"] == 5
    owner.close()


def test_a_program_that_sends_three_requests_and_exits_shows_them_in_status(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "store")
    program = textwrap.dedent(
        """
        import sys, openai, distillkit
        from distillkit import DistillConfig, Distiller
        d = Distiller(DistillConfig(path=sys.argv[2]))
        client = distillkit.wrap(openai.OpenAI(base_url=sys.argv[1], api_key="sk-x", max_retries=0), d)
        for q in ["what is a pin", "how do refunds work", "where is my card"]:
            client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": q}])
        """
    )
    subprocess.run([sys.executable, "-c", program, simulator.base_url, path], check=True, timeout=300)
    monkeypatch.setenv("DISTILLKIT_PATH", path)
    out = io.StringIO()
    assert cli.main(["status", "--json"], out=out) == 0
    assert json.loads(out.getvalue())["default"]["requests"] == 3
