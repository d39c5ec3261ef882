"""Issue 14, item 14 (configuration and CLI) and item 10 (calibrate --save on narrow data)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _support import ask, train_by_hand

import distillkit
from distillkit import ConfigError, DistillConfig, Distiller
from distillkit.cli import main
from distillkit.testing import Simulator


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(args), out=out), out.getvalue()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DISTILLKIT_DISTILLED_BASE_URL", "not a url"),
        ("DISTILLKIT_DISTILLED_BASE_URL", "ftp://models.example.com/v1"),
        ("DISTILLKIT_BASE_MODEL", "   "),
    ],
)
def test_bad_urls_and_blank_names_are_refused(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        DistillConfig.from_env({variable: value}, dotenv=False)
    assert error.value.variable == variable
    assert variable in str(error.value)


def test_a_misspelt_variable_is_named_with_the_closest_known_one(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="distillkit"):
        config = DistillConfig.from_env({"DISTILLKIT_TRESHOLD": "0.8"}, dotenv=False)
    assert config.threshold != 0.8
    [record] = [r for r in caplog.records if "DISTILLKIT_TRESHOLD" in r.getMessage()]
    assert "DISTILLKIT_THRESHOLD" in record.getMessage()


@pytest.mark.parametrize("command", ["status", "export"])
def test_status_and_export_say_there_is_no_store_instead_of_creating_one(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    missing = tmp_path / "nowhere" / ".distillkit"
    monkeypatch.setenv("DISTILLKIT_PATH", str(missing))
    code, out = cli(command)
    err = capsys.readouterr().err
    assert not missing.exists()
    assert code != 0
    assert "no store" in (out + err).lower() and str(missing) in out + err


def test_train_on_a_locked_store_prints_one_line(simulator: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "held"
    holder = Distiller(DistillConfig(path=str(path)))
    client = distillkit.wrap(simulator.client(), holder)
    try:
        ask(client, "keep the store open")
        assert holder.flush(10)
        env = {**os.environ, "DISTILLKIT_PATH": str(path), "OPENAI_API_KEY": "sk-simulator"}
        env["OPENAI_BASE_URL"] = simulator.base_url
        done = subprocess.run(
            [sys.executable, "-m", "distillkit.cli", "train"], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        distillkit.unwrap(client)
        holder.close()
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- item 10: a calibrated threshold needs disagreeing pairs near it ---------------------------

INTENTS = {
    "delivery": [
        "Where is my new card?",
        "My card has not arrived",
        "When will my card be delivered?",
        "How long does card delivery take?",
        "Card still not here",
        "Has my card been shipped?",
        "Track my card delivery",
        "My new card is late",
    ],
    "pin": [
        "How do I change my PIN?",
        "I forgot my PIN",
        "Reset my card PIN",
        "Can I choose a new PIN?",
        "Where do I set my PIN?",
        "PIN change at an ATM",
        "My PIN is blocked",
        "Unblock my PIN",
    ],
    "refund": [
        "I want a refund",
        "How do I get my money back?",
        "Refund for a purchase",
        "Return an item for a refund",
        "My refund has not arrived",
        "Refund status please",
        "Request a refund",
        "Where is my refund?",
    ],
}


#: The floor a saved calibrated threshold never goes below (documented in the README).
CALIBRATION_FLOOR = 0.7


def _intent_answer(request: dict[str, Any]) -> str:
    text = next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")
    intent = next((name for name, texts in INTENTS.items() if text in texts), "other")
    return f"Intent: {intent}."


def test_calibrate_save_never_goes_below_the_floor_on_narrow_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "narrow"
    with Simulator(answer=_intent_answer) as sim:
        distiller = Distiller(DistillConfig(path=str(path), routing_rule="top1"))
        client = distillkit.wrap(sim.client(), distiller, namespace="bank")
        for texts in INTENTS.values():
            for text in texts:
                ask(client, text)
        train_by_hand(distiller, "bank", "ft:gpt-4.1-nano-2025-04-14:distillkit::narrow", sim)
        distillkit.unwrap(client)
        distiller.close()
    monkeypatch.setenv("DISTILLKIT_PATH", str(path))
    _code, out = cli("calibrate", "--namespace", "bank", "--save", "--json", "--min-support", "5")
    report = json.loads(out)
    assert report["threshold"] is None or report["threshold"] >= CALIBRATION_FLOOR, report
    distiller = Distiller.from_env()
    try:
        saved = distiller.registry.get("bank").threshold
        assert saved is None or saved >= CALIBRATION_FLOOR
    finally:
        distiller.close()


def test_export_to_a_file_on_a_locked_store_keeps_the_earlier_export(simulator: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "held"
    holder = Distiller(DistillConfig(path=str(path)))
    client = distillkit.wrap(simulator.client(), holder)
    earlier = tmp_path / "train.jsonl"
    earlier.write_text('{"messages": []}\n')
    try:
        ask(client, "keep the store open")
        assert holder.flush(10)
        env = {**os.environ, "DISTILLKIT_PATH": str(path)}
        done = subprocess.run(
            [sys.executable, "-m", "distillkit.cli", "export", "-o", str(earlier)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        distillkit.unwrap(client)
        holder.close()
    assert done.returncode != 0
    assert earlier.read_text() == '{"messages": []}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held", "train.jsonl"]  # no temporary file left
