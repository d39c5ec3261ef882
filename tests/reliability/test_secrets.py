"""API keys planted everywhere a program puts them never appear in what distillkit writes or says:
store files, logs (DEBUG), exported datasets, status output, exception messages, reprs."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import openai
import pytest
from _support import ask, train_by_hand

import distillkit
from distillkit import Distiller
from distillkit.cli import main
from distillkit.testing import Simulator

CLIENT_KEY = "sk-planted-client-5b1e0c9d"
DISTILLED_KEY = "sk-planted-distilled-77a2f4"
QDRANT_KEY = "qd-planted-qdrant-3c9e11"
HEADER_KEY = "sk-planted-header-e4d0aa"
SECRETS = (CLIENT_KEY, DISTILLED_KEY, QDRANT_KEY, HEADER_KEY)
STUDENT = "ft:gpt-4.1-nano-2025-04-14:distillkit::secrets1"


def assert_clean(where: str, text: str | bytes) -> None:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    for secret in SECRETS:
        assert secret.encode() not in data, f"{secret} leaked into {where}"


def test_api_keys_never_leak(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store_path = tmp_path / "store"
    monkeypatch.setenv("DISTILLKIT_PATH", str(store_path))
    monkeypatch.setenv("DISTILLKIT_DISTILLED_BASE_URL", simulator.base_url)
    monkeypatch.setenv("DISTILLKIT_DISTILLED_API_KEY", DISTILLED_KEY)
    monkeypatch.setenv("QDRANT_API_KEY", QDRANT_KEY)  # set, though no QDRANT_URL: it must stay unseen
    monkeypatch.setenv("OPENAI_API_KEY", CLIENT_KEY)
    caplog.set_level(logging.DEBUG, logger="distillkit")
    header = {"Authorization": f"Bearer {HEADER_KEY}"}
    errors: list[BaseException] = []

    distiller = Distiller.from_env()
    client: Any = distillkit.wrap(simulator.client(api_key=CLIENT_KEY), distiller)
    ask(client, "Where is my new card?", extra_headers=header)
    train_by_hand(distiller, "default", STUDENT, simulator)
    routed = ask(client, "Where is my new card?", extra_headers=header)
    assert routed.model == STUDENT
    student_request = next(r for r in reversed(simulator.requests) if r.body and r.body.get("model") == STUDENT)
    # The distilled server gets its own key, never the caller's header meant for the teacher's API.
    assert student_request.headers["authorization"] == f"Bearer {DISTILLED_KEY}"

    simulator.inject("chat", status=500, model=STUDENT)  # a failing student: logged, teacher answers
    assert ask(client, "Where is my new card?", extra_headers=header).model == "gpt-4.1"
    simulator.inject("chat", status=401, model="gpt-4.1")  # the API's own error reaches the caller
    with pytest.raises(openai.AuthenticationError) as denied:
        ask(client, "Something else entirely about loans", extra_headers=header)
    errors.append(denied.value)
    distiller.store.close()  # a failing store: logged, counted
    ask(client, "How do I close my account?", extra_headers=header)
    assert distiller.flush(10)
    reprs = [repr(distiller), repr(distiller.config), str(distiller.config), repr(distiller.llm_provider)]
    distiller.close()

    second = Distiller.from_env()
    second.store  # noqa: B018 - holds the folder, so the CLI below fails with a message
    locked = io.StringIO()
    try:
        assert main(["status"], locked) == 2
    except Exception as exc:  # pragma: no cover - the CLI reports errors, it does not raise them
        errors.append(exc)
    reprs.append(repr(second.store))
    second.close()

    exported = tmp_path / "export.jsonl"
    assert main(["export", "-o", str(exported)]) == 0
    status = io.StringIO()
    assert main(["status", "--json"], status) == 0

    assert exported.read_text() and "Where is my new card?" in exported.read_text()
    files = [p for p in store_path.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert_clean(str(path), path.read_bytes())
    assert_clean("the export", exported.read_bytes())
    assert_clean("status output", status.getvalue() + locked.getvalue())
    assert caplog.records and "distilled model" in caplog.text
    assert_clean("logs", caplog.text + "".join(str(r.args) for r in caplog.records))
    for error in errors:
        assert_clean(f"{type(error).__name__} message", f"{error} {error!r} {getattr(error, 'body', '')}")
    for text in reprs:
        assert_clean("a repr", text)
