"""The files API: uploads (multipart), listing, retrieval, content, and OpenAI's checks of a
chat fine-tuning file.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from distillkit.testing.simulator.answers import _text_of, _words
from distillkit.testing.simulator.faults import _Faults
from distillkit.testing.simulator.http import _ApiError, _limit, _page, _Response


def _validate_training_file(content: bytes, *, min_examples: int) -> tuple[str | None, int]:
    """Check a chat fine-tuning JSONL file the way OpenAI does before a job is queued.

    Returns:
        ``(error message or None, number of words in all messages)``.
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return "Invalid file format. The file must be UTF-8 encoded.", 0
    examples = 0
    tokens = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"Invalid file format. Line {number}: invalid JSON ({exc.msg}).", 0
        if not isinstance(example, dict):
            return f"Invalid file format. Line {number}: each line must be a JSON object.", 0
        messages = example.get("messages")
        if not isinstance(messages, list) or not messages:
            return f"Invalid file format. Line {number}: missing a non-empty 'messages' list.", 0
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return f"Invalid file format. Line {number}, message {index}: missing 'role'.", 0
            tokens += _words(_text_of(message.get("content"))) + 1
        last = messages[-1]
        if last["role"] != "assistant" or not (last.get("content") or last.get("tool_calls")):
            return (
                f"Invalid file format. Line {number}: the last message must be an assistant message "
                "with content or tool_calls.",
                0,
            )
        examples += 1
    if examples < min_examples:
        return (
            f"Training file has {examples} example(s), but must have at least {min_examples} examples.",
            0,
        )
    return None, tokens


class _Files(_Faults):
    """``/v1/files``."""

    _files: dict[str, dict[str, Any]]
    _file_bytes: dict[str, bytes]

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """Uploaded file objects by id (copies)."""
        with self._lock:
            return copy.deepcopy(self._files)

    def file_content(self, file_id: str) -> bytes:
        """The bytes of an uploaded file.

        Raises:
            KeyError: If there is no such file.
        """
        with self._lock:
            return self._file_bytes[file_id]

    def _files_route(
        self,
        method: str,
        parts: list[str],
        query: dict[str, str],
        multipart: dict[str, tuple[str | None, bytes]] | None,
    ) -> _Response:
        if not parts:
            if method == "POST":
                return self._upload(multipart)
            if method == "GET":
                with self._lock:
                    files = list(self._files.values())
                if "purpose" in query:
                    files = [f for f in files if f["purpose"] == query["purpose"]]
                files = sorted(files, key=lambda f: f["created_at"], reverse=True)
                if query.get("order") == "asc":
                    files.reverse()
                page, has_more = _page(files, query.get("after"), _limit(query, 10000))
                return self._json(
                    {
                        "object": "list",
                        "data": page,
                        "has_more": has_more,
                        "first_id": page[0]["id"] if page else None,
                        "last_id": page[-1]["id"] if page else None,
                    }
                )
            raise self._not_found(method, "/v1/files")
        file_id = parts[0]
        with self._lock:
            if file_id not in self._files:
                raise _ApiError(404, f"No such File object: {file_id}", param="id")
            if parts[1:] == [] and method == "GET":
                return self._json(self._files[file_id])
            if parts[1:] == [] and method == "DELETE":
                del self._files[file_id]
                del self._file_bytes[file_id]
                return self._json({"id": file_id, "object": "file", "deleted": True})
            if parts[1:] == ["content"] and method == "GET":
                return _Response(200, self._file_bytes[file_id], "application/octet-stream")
        raise self._not_found(method, "/v1/files/" + "/".join(parts))

    def _upload(self, multipart: dict[str, tuple[str | None, bytes]] | None) -> _Response:
        if multipart is None:
            raise _ApiError(400, "Expected a multipart/form-data body with 'file' and 'purpose'.")
        purpose = multipart.get("purpose", (None, b""))[1].decode("utf-8", "replace")
        if "file" not in multipart:
            raise _ApiError(400, "Missing required parameter: 'file'.", param="file")
        if not purpose:
            raise _ApiError(400, "Missing required parameter: 'purpose'.", param="purpose")
        if purpose != "fine-tune":
            raise _ApiError(
                400,
                f"Invalid value for 'purpose': {purpose!r}. The simulator only accepts 'fine-tune'.",
                param="purpose",
            )
        filename, content = multipart["file"]
        file_id = self._id("file-", 22)
        file_obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename or "upload",
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }
        with self._lock:
            self._files[file_id] = file_obj
            self._file_bytes[file_id] = content
        return self._json(file_obj)
