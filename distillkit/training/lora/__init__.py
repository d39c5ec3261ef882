"""Open-weights distillation: LoRA adapters on a small open model, served by vLLM.

* :mod:`~distillkit.training.lora.provider`: :class:`LoRAFineTuningProvider` starts, polls and
  cancels jobs, each in its own folder and its own process;
* :mod:`~distillkit.training.lora.worker`: that process (transformers + peft);
* :mod:`~distillkit.training.lora.server`: :class:`VLLMServer`, where a trained adapter is
  registered so that the router can send requests to it;
* :mod:`~distillkit.training.lora.files`: the job folder's files, shared by both sides.
"""

from distillkit.training.lora.provider import LoRAFineTuningProvider, LoRASettings
from distillkit.training.lora.server import VLLMServer

__all__ = ["LoRAFineTuningProvider", "LoRASettings", "VLLMServer"]
