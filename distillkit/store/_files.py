"""The embedded store's folder: owner-only files (nobody else on the machine reads captures), the
folder lock, and the manifest that says which embedder made the vectors."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

from distillkit.store._payload import INDEXED_MIRROR, mismatch_error
from distillkit.store.base import EmbedderInfo

__all__ = [
    "check_manifest",
    "folder_identity",
    "lock_folder",
    "make_private_dir",
    "write_json_atomic",
    "write_manifest",
]

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the engine's WAL lock is the only guard
    fcntl = None  # type: ignore[assignment]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a 0o600 temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) readable by its owner only."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask and ignored for an existing folder.
    os.chmod(path, 0o700)


def folder_identity(path: Path) -> tuple[int, int]:
    """(device, inode) of a folder: tells a folder replaced underneath from the one opened."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(str(path))
    return st.st_dev, st.st_ino


def lock_folder(path: Path) -> int | None:
    """Take an exclusive lock on ``path/.lock`` and return its descriptor (None where not POSIX).

    Raises:
        BlockingIOError: another process (or another descriptor in this one) holds the lock.
    """
    if fcntl is None:
        return None
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_manifest(folder: Path, embedder: EmbedderInfo) -> None:
    """Raise EmbedderMismatchError if ``folder/manifest.json`` names another embedder (none: fine)."""
    try:
        data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    stored = EmbedderInfo(str(data["embedder"]["name"]), int(data["embedder"]["dim"]))
    if stored != embedder:
        raise mismatch_error(stored, embedder, f"The store at {folder}")


def write_manifest(folder: Path, embedder: EmbedderInfo) -> None:
    """Write ``folder/manifest.json`` for ``embedder`` unless the folder has one."""
    path = folder / "manifest.json"
    if not path.exists():
        manifest = {
            "format": 1,
            "embedder": {"name": embedder.name, "dim": embedder.dim},
            "payload_layout": {"indexed_mirror": INDEXED_MIRROR},
        }
        write_json_atomic(path, manifest)
