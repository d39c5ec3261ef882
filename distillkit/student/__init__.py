"""The student on a CPU: a small open model plus its LoRA adapters, served by llama.cpp.

:class:`StudentServer` is an OpenAI-compatible HTTP server (chat completions with streaming,
``/v1/models``, vLLM's ``load_lora_adapter`` / ``unload_lora_adapter``) around an
:class:`Engine`: one llama.cpp base model, memory-mapped, and the adapters loaded onto it. It
is for the demo, tests, benchmarks and low-traffic CPU deployments; vLLM stays the engine for
GPUs. Install with ``pip install 'distillkit[local]'`` (see the README for llama.cpp's build
flags). Run it with ``distillkit serve-student`` or ``python -m distillkit.student``.

Example:
    >>> with StudentServer("smollm2-135m") as student:  # doctest: +SKIP
    ...     lora = LoRAFineTuningProvider("./lora", base_model="smollm2-135m", server=student.base_url)
    ...     distiller = Distiller(DistillConfig(distilled_base_url=student.base_url), fine_tuning_provider=lora)
"""

from distillkit.student.engine import Engine
from distillkit.student.server import StudentServer
from distillkit.training.lora.base_models import SMOLLM2

__all__ = ["SMOLLM2", "Engine", "StudentServer"]
