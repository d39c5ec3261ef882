"""The distillkit command on a populated store: status, train, export."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from _support import ask

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.cli import main
from distillkit.testing import Simulator

QUESTIONS = [f"Where is my card number {i}?" for i in range(12)]


@pytest.fixture
def populated(simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store with 12 captured interactions in "support" and 1 in "billing", made by another process."""
    path = tmp_path / "populated"
    distiller = Distiller(DistillConfig(path=str(path)))
    client = distillkit.wrap(simulator.client(), distiller)
    with distillkit.scope("support"):
        for q in QUESTIONS:
            ask(client, q)
    with distillkit.scope("billing"):
        ask(client, "Why was I charged twice?")
    distillkit.unwrap(client)
    distiller.close()
    monkeypatch.setenv("DISTILLKIT_PATH", str(path))
    monkeypatch.setenv("DISTILLKIT_MIN_EXAMPLES", "10")
    # Near-duplicate questions: too few groups to hold any out; the gate has its own test below.
    monkeypatch.setenv("DISTILLKIT_HOLDOUT", "0")
    # The CLI builds its fine-tuning client from the environment, like OpenAI() does.
    monkeypatch.setenv("OPENAI_BASE_URL", simulator.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-simulator")
    return path


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out=out)
    return code, out.getvalue()


def test_status_json(populated: Path) -> None:
    code, out = cli("status", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["support"]["stored"] == len(set(QUESTIONS)) - report["support"]["deduplicated"]
    assert report["support"]["pending"] == report["support"]["stored"]
    assert report["support"]["requests"] == 12 and report["support"]["active_model"] is None
    assert report["billing"]["stored"] == 1


def test_train_then_status_shows_the_active_model(simulator: Simulator, populated: Path) -> None:
    simulator.job_step_seconds = 0.01
    code, out = cli("train", "--wait", "--timeout", "30")
    assert code == 0
    assert "support: succeeded" in out and "ft:gpt-4.1-nano" in out
    assert "billing: skipped" in out  # 1 example < DISTILLKIT_MIN_EXAMPLES
    code, out = cli("status")
    support = next(line for line in out.splitlines() if line.startswith("support"))
    assert "ft:gpt-4.1-nano" in support
    assert support.split()[1] == support.split()[2]  # stored == indexed
    assert support.split()[3] == "0"  # nothing pending


def test_export_writes_training_jsonl(populated: Path, tmp_path: Path) -> None:
    target = tmp_path / "train.jsonl"
    code, _ = cli("export", "--namespace", "support", "-o", str(target))
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert code == 0
    assert len(lines) >= 10
    assert all(line["messages"][-1]["role"] == "assistant" for line in lines)
    assert {line["messages"][0]["content"] for line in lines} <= set(QUESTIONS)


def test_bad_configuration_is_a_clear_error(populated: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("DISTILLKIT_THRESHOLD", "2")
    code, _ = cli("status")
    assert code == 2
    assert "DISTILLKIT_THRESHOLD" in capsys.readouterr().err


DISTINCT = [
    "Where is my new card?",
    "How do I close my account?",
    "Why was I charged twice?",
    "Can I raise my overdraft limit?",
    "What is the fee for a transfer abroad?",
    "How do I reset my PIN?",
    "Is there a mortgage holiday?",
    "When is interest paid on savings?",
    "How do I report fraud?",
    "Can I freeze my card for a week?",
    "How long does a cheque take to clear?",
    "Can I get paper statements by post?",
]


def test_status_shows_each_rounds_promotion_gate(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gate"
    distiller = Distiller(DistillConfig(path=str(path)))
    client = distillkit.wrap(simulator.client(), distiller)
    for q in DISTINCT:
        ask(client, q)
    distillkit.unwrap(client)
    distiller.close()
    for name, value in (("DISTILLKIT_PATH", str(path)), ("DISTILLKIT_MIN_EXAMPLES", "10")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENAI_BASE_URL", simulator.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-simulator")
    simulator.job_step_seconds = 0.01

    simulator.student_wrong()  # the first candidate answers wrongly
    code, out = cli("train", "--wait", "--timeout", "30")
    assert code == 0 and "default: rejected" in out and "promotion gate" in out
    simulator.student_right()
    code, out = cli("train", "--wait", "--timeout", "30")
    assert code == 0 and "default: succeeded" in out

    code, out = cli("status")
    rounds = [line.strip() for line in out.splitlines() if line.strip().startswith("round ")]
    assert len(rounds) == 2
    assert rounds[0].endswith("held-out agreement 0.000 on 2 (floor 0.8): rejected")
    assert "succeeded ft:" in rounds[1] and rounds[1].endswith("held-out agreement 1.000 on 2 (floor 0.8): promoted")
    _, out = cli("status", "--json")
    [first, second] = json.loads(out)["default"]["rounds"]
    assert (first["status"], first["evaluation"]["verdict"], first["evaluation"]["n"]) == ("rejected", "rejected", 2)
    assert (second["status"], second["evaluation"]["agreement"]) == ("succeeded", 1.0)

    # The rejected candidate can be inspected: what it answered beside what the teacher said.
    code, out = cli("status", "--round", first["job_id"])
    assert code == 0 and f"round {first['job_id']} (default): rejected" in out
    asked = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("asked:")]
    teacher = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("teacher:")]
    candidate = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("candidate:")]
    assert len(asked) == 2 and set(asked) <= set(DISTINCT)
    assert all(t and c and t != c for t, c in zip(teacher, candidate, strict=True))
    assert cli("status", "--round", "distillkit-nothing")[0] == 2


def test_export_to_a_file_on_a_locked_store_keeps_the_earlier_export(populated: Path, tmp_path: Path) -> None:
    target = tmp_path / "train.jsonl"
    assert cli("export", "--namespace", "support", "-o", str(target))[0] == 0
    earlier = target.read_text()
    holder = Distiller(DistillConfig(path=str(populated)))
    holder.store  # noqa: B018 - an application holds the store
    try:
        code, _ = cli("export", "--namespace", "support", "-o", str(target))
    finally:
        holder.close()
    assert code == 2
    assert target.read_text() == earlier and earlier
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".distillkit-export")) == []


def test_train_beside_a_running_application_says_what_works(
    populated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = Distiller(DistillConfig(path=str(populated)))
    holder.store  # noqa: B018 - an application holds the store
    try:
        code, _ = cli("train", "--wait")
    finally:
        holder.close()
    assert code == 2
    said = capsys.readouterr().err
    assert "A running application holds the embedded store" in said
    assert "train_now(wait=True)" in said and "distillkit status" in said and "QDRANT_URL" in said
