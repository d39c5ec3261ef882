"""A LoRA job folder's files, shared by the provider and the training process (which imports only this)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["ADAPTER", "CANCEL", "DATA", "LOCK", "LOG", "METRICS", "SPEC", "STATUS", "read_json", "write_json"]

#: Files of a job folder (the training process writes ``status.json``, ``metrics.json``, the log
#: and ``adapter/``; the provider writes the rest).
SPEC, DATA, STATUS, METRICS, LOG, LOCK, CANCEL, ADAPTER = (
    "job.json",
    "train.jsonl",
    "status.json",
    "metrics.json",
    "train.log",
    "lock",
    "cancel",
    "adapter",
)


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (a reader sees the old file or the new one, never half of one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when the file is missing or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
