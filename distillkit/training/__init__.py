"""Training: captured interactions → a fine-tuning job → the namespace's distilled model.

- :class:`Trainer`: runs rounds (collect new captures, start a job, poll it, flip its points).
- :class:`TrainingScheduler`: runs rounds in a background thread.
- Extension points, named after the original project: :class:`DatasetProvider` (records →
  training file) and :class:`FineTuningProvider` (start / poll / cancel a job), with OpenAI's
  implementations :class:`OpenAIDatasetProvider` and :class:`OpenAIFineTuningProvider`, and
  :class:`LoRAFineTuningProvider` (open models, adapters served by vLLM; ``distillkit[lora]``).
"""

from __future__ import annotations

from distillkit.training.lora import LoRAFineTuningProvider, LoRASettings, VLLMServer
from distillkit.training.openai import OpenAIDatasetProvider, OpenAIFineTuningProvider
from distillkit.training.providers import Dataset, DatasetProvider, FineTuningProvider, JobStatus
from distillkit.training.scheduler import TrainingScheduler
from distillkit.training.trainer import Trainer, TrainingRound

__all__ = [
    "Dataset",
    "DatasetProvider",
    "FineTuningProvider",
    "JobStatus",
    "LoRAFineTuningProvider",
    "LoRASettings",
    "OpenAIDatasetProvider",
    "OpenAIFineTuningProvider",
    "Trainer",
    "TrainingRound",
    "TrainingScheduler",
    "VLLMServer",
]
