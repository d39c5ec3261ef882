"""Registering a trained adapter with a running vLLM server, through its runtime LoRA API."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from distillkit.errors import TrainingError

__all__ = ["VLLMServer"]


class VLLMServer:
    """A running vLLM server's runtime LoRA API (also spoken by :class:`distillkit.testing.Simulator`).

    The server must be started with LoRA enabled and runtime updates allowed::

        VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve Qwen/Qwen2.5-0.5B-Instruct \\
            --enable-lora --max-lora-rank 16 --port 8000

    It must also see the adapter folders at the same paths (same machine, or a shared volume).

    Args:
        base_url: the server's OpenAI-compatible base URL, e.g. ``http://localhost:8000/v1``
            (the same value as ``DISTILLKIT_DISTILLED_BASE_URL``).
        api_key: sent as a bearer token when the server was started with ``--api-key``.
        timeout: seconds per request (loading an adapter takes a moment on a busy server).
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout

    def __repr__(self) -> str:  # never show the key
        return f"VLLMServer(base_url={self.base_url!r})"

    def load_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Register the adapter in ``path`` as model ``name``; loading it again is not an error.

        Raises:
            TrainingError: the server refused (the message is the server's) or could not be reached.
        """
        status, text = self._post("load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        if status == 200 or (status == 400 and "already been loaded" in text):
            return
        raise TrainingError(f"vLLM refused to load adapter {name!r} (HTTP {status}): {text[:300]}")

    def unload_adapter(self, name: str) -> None:
        """Unregister model ``name``; an adapter that is not loaded is not an error."""
        status, text = self._post("unload_lora_adapter", {"lora_name": name})
        if status not in (200, 404):
            raise TrainingError(f"vLLM refused to unload adapter {name!r} (HTTP {status}): {text[:300]}")

    def _post(self, endpoint: str, body: dict[str, Any]) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(
            f"{self.base_url}/{endpoint}", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            raise TrainingError(f"could not reach vLLM at {self.base_url}: {exc}") from None
