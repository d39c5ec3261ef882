"""The models API and vLLM's runtime LoRA endpoints: which student models are served."""

from __future__ import annotations

import os
import time
from typing import Any

from distillkit.testing.simulator.fine_tuning import _FineTuning
from distillkit.testing.simulator.http import _ORG, _ApiError, _Response

#: Base (teacher) models listed by ``GET /v1/models``. Chat accepts any non-``ft:`` name anyway.
BASE_MODELS: tuple[str, ...] = (
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4o-mini-2024-07-18",
    "text-embedding-3-small",
    "text-embedding-3-large",
)


class _Models(_FineTuning):
    """``/v1/models``, ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``; added student models."""

    _added_models: dict[str, int]
    _lora: dict[str, str]

    def add_model(self, name: str) -> None:
        """Register a student model name that chat will serve with ``student_answer``."""
        with self._lock:
            self._added_models.setdefault(name, int(time.time()))

    def remove_model(self, name: str) -> None:
        """Unregister a model added with :meth:`add_model` (no error if absent)."""
        with self._lock:
            self._added_models.pop(name, None)

    @property
    def lora_adapters(self) -> dict[str, str]:
        """Loaded LoRA adapters, ``{lora_name: lora_path}`` (a copy)."""
        with self._lock:
            return dict(self._lora)

    def _model_objects(self) -> list[dict[str, Any]]:
        with self._lock:
            self._progress_jobs()
            models = [
                {"id": name, "object": "model", "created": 1700000000, "owned_by": "system"} for name in BASE_MODELS
            ]
            for job in self._jobs.values():
                if job.data["fine_tuned_model"]:
                    models.append(
                        {
                            "id": job.data["fine_tuned_model"],
                            "object": "model",
                            "created": job.data["finished_at"],
                            "owned_by": _ORG,
                        }
                    )
            for name, created in self._added_models.items():
                models.append({"id": name, "object": "model", "created": created, "owned_by": _ORG})
            for name, path in self._lora.items():
                models.append({"id": name, "object": "model", "created": 1700000000, "owned_by": "vllm", "root": path})
        return models

    def _list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": self._model_objects()}

    def _get_model(self, model_id: str) -> dict[str, Any]:
        for model in self._model_objects():
            if model["id"] == model_id:
                return model
        raise _ApiError(
            404,
            f"The model `{model_id}` does not exist or you do not have access to it.",
            code="model_not_found",
        )

    def _load_lora(self, body: Any) -> _Response:
        if not isinstance(body, dict) or not body.get("lora_name") or not body.get("lora_path"):
            raise _ApiError(400, "Both 'lora_name' and 'lora_path' must be provided.")
        name = str(body["lora_name"])
        path = str(body["lora_path"])
        if not os.path.isfile(os.path.join(path, "adapter_config.json")):
            # vLLM reads the adapter when it loads it: a path it cannot read is refused.
            raise _ApiError(400, f"Loading lora {name} failed: No adapter found for {path}", param="lora_path")
        with self._lock:
            if name in self._lora:
                raise _ApiError(400, f"The lora adapter '{name}' has already been loaded.", param="lora_name")
            self._lora[name] = path
        return _Response(200, f"Success: LoRA adapter '{name}' added successfully.".encode(), "text/plain")

    def _unload_lora(self, body: Any) -> _Response:
        if not isinstance(body, dict) or not body.get("lora_name"):
            raise _ApiError(400, "'lora_name' must be provided.", param="lora_name")
        name = str(body["lora_name"])
        with self._lock:
            if name not in self._lora:
                raise _ApiError(404, f"The lora adapter '{name}' cannot be found.", param="lora_name")
            del self._lora[name]
        return _Response(200, f"Success: LoRA adapter '{name}' removed successfully.".encode(), "text/plain")
