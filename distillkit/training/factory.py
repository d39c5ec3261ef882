"""Building a :class:`~distillkit.Distiller`'s :class:`~distillkit.training.Trainer`.

The providers come from the configuration unless given, and the promotion gate gets its serving
path: a candidate answers as a routed request would be, through the pipeline's
:class:`~distillkit.serving.LLMProvider`, with the caller's most recent client (or, when none was
seen in this process, e.g. in a ``distillkit train`` worker, the fine-tuning client, which serves
OpenAI fine-tunes; or a synchronous copy of an async one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from distillkit.state import ModelRegistry
from distillkit.training.gate import teacher_judge
from distillkit.training.openai import OpenAIDatasetProvider, OpenAIFineTuningProvider
from distillkit.training.providers import DatasetProvider, FineTuningProvider
from distillkit.training.trainer import Trainer

if TYPE_CHECKING:
    from distillkit.config import DistillConfig
    from distillkit.pipeline import Pipeline
    from distillkit.routing.budget import ErrorBudget
    from distillkit.routing.confidence import StudentAnswer
    from distillkit.store.base import Store

__all__ = ["configured_fine_tuning", "make_trainer"]


def make_trainer(
    config: DistillConfig,
    *,
    store: Callable[[], Store],
    registry: ModelRegistry,
    budget: ErrorBudget | None,
    pipeline: Pipeline,
    dataset_provider: DatasetProvider | None,
    fine_tuning_provider: FineTuningProvider | None,
    training_client: Any,
) -> Trainer:
    """The trainer, with the default providers where none is given (see :class:`~distillkit.Distiller`)."""
    path = _ServingPath(pipeline, training_client, fine_tuning_provider)
    trainer = Trainer(
        store=store,
        registry=registry,
        config=config,
        dataset_provider=dataset_provider or OpenAIDatasetProvider(),
        fine_tuning_provider=fine_tuning_provider or configured_fine_tuning(config, training_client, path.seen),
        student=path.ask,
        judge=path.judge if config.judge == "teacher" else None,
        on_labels=budget.restart if budget is not None else None,
    )
    path.trainer = trainer
    return trainer


def configured_fine_tuning(
    config: DistillConfig, training_client: Any, seen_client: Callable[[], Any]
) -> FineTuningProvider:
    """The provider ``config.fine_tuning`` names.

    Args:
        config: ``fine_tuning``, ``lora_dir``, ``base_model`` and ``distilled_base_url`` apply.
        training_client: the OpenAI client to fine-tune with (None: see ``seen_client``).
        seen_client: returns the application's own client, if one was seen, else None (then
            ``OpenAI()`` from the environment).
    """
    if config.fine_tuning == "lora":
        from distillkit.training.lora import LoRAFineTuningProvider, VLLMServer

        server = None
        if config.distilled_base_url:  # the server that serves the adapters also loads them
            server = VLLMServer(config.distilled_base_url, config.distilled_api_key)
        return LoRAFineTuningProvider(config.lora_dir, base_model=config.base_model, server=server)
    # No client given: the application's own (its key and base URL), else OpenAI() from the environment.
    return OpenAIFineTuningProvider(training_client, default_client=seen_client)


class _ServingPath:
    """The clients distillkit's own calls use where the caller's own one is best."""

    def __init__(self, pipeline: Pipeline, training_client: Any, given: FineTuningProvider | None) -> None:
        self._pipeline = pipeline
        self._training_client = training_client
        self._given = given
        self.trainer: Trainer | None = None

    def ask(self, kwargs: dict[str, Any]) -> StudentAnswer:
        """The promotion gate's serving path: the candidate answers as a routed request would be."""
        return self._pipeline.student_answer(self.caller(), kwargs)

    def judge(
        self, kwargs: dict[str, Any], student: Mapping[str, Any] | None, teacher: Mapping[str, Any] | None
    ) -> bool:
        """Judge mode: the teacher model compares the candidate's answer with its own."""
        return teacher_judge(self.caller(), kwargs, student, teacher)

    def caller(self) -> Any:
        """A synchronous client: the caller's latest, else the training client or the provider's."""
        client = self._pipeline.last_client()
        if client is None:
            provider = self._given or (self.trainer.fine_tuning_provider if self.trainer else None)
            client = self._training_client or self.seen() or getattr(provider, "client", None)
        return client

    def seen(self) -> Any:
        """The application's latest sync client, or a sync copy of its async one; None if none was seen."""
        client = self._pipeline.last_client()
        if client is None and (aclient := self._pipeline.last_client(asynchronous=True)) is not None:
            import openai

            client = openai.OpenAI(
                api_key=aclient.api_key,
                base_url=aclient.base_url,
                organization=aclient.organization,
                project=aclient.project,
            )
        return client
