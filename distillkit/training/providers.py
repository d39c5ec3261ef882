"""The training extension points, named after the original project.

- :class:`DatasetProvider`: captured records (stored point payloads) → training examples and
  the training file's bytes, with the records it could not use and why.
- :class:`FineTuningProvider`: starts, polls and cancels a fine-tuning job on some service.

OpenAI's implementations live in :mod:`distillkit.training.openai`. Another service needs one
subclass of each (or only of :class:`FineTuningProvider` when it reads OpenAI's JSONL format).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["TERMINAL_STATUSES", "Dataset", "DatasetProvider", "FineTuningProvider", "JobState", "JobStatus"]

#: A job's state, with OpenAI's names (other providers translate theirs to these).
JobState = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]

#: States a job never leaves.
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class Dataset:
    """A training file built from captured records.

    Attributes:
        data: the file's bytes, as the fine-tuning service expects them.
        examples: the training examples in the file, in order.
        kept: for each example, the index of the record it came from (records not listed were
            dropped): the trainer flips exactly these points once the job succeeds.
        drop_reasons: why records were dropped, as ``{reason: how many}``.
    """

    data: bytes
    examples: list[dict[str, Any]]
    kept: list[int]
    drop_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        """How many records could not be trained on."""
        return sum(self.drop_reasons.values())


class DatasetProvider(ABC):
    """Turns captured records into a training file.

    Subclasses implement :meth:`example` (one record → one example, or ``ValueError`` naming why
    the record cannot be used) and :meth:`encode` (examples → file bytes). :meth:`build` ties
    them together; override it only when examples depend on each other.

    A record is a stored point's payload: ``messages`` (the request's messages), ``params``
    (``tools``, ``tool_choice``, ``response_format``, ``parallel_tool_calls``, ...), ``response``
    (the teacher's assistant message, maybe with ``tool_calls``), ``teacher_model``, ...
    """

    @abstractmethod
    def example(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """One training example from one record.

        Raises:
            ValueError: the record cannot be trained on; the message is the reason (kept short
                and free of the record's content: it is counted and logged).
        """

    @abstractmethod
    def encode(self, examples: Sequence[Mapping[str, Any]]) -> bytes:
        """The training file's bytes for these examples."""

    def build(self, records: Sequence[Mapping[str, Any]]) -> Dataset:
        """Every usable record as an example, and the file; unusable records are counted by reason."""
        examples: list[dict[str, Any]] = []
        kept: list[int] = []
        reasons: Counter[str] = Counter()
        for index, record in enumerate(records):
            try:
                examples.append(self.example(record))
            except (ValueError, TypeError, KeyError) as exc:
                # Stored data is only as good as what was captured: a bad record is dropped, not fatal.
                reasons[str(exc) or type(exc).__name__] += 1
                continue
            kept.append(index)
        return Dataset(self.encode(examples) if examples else b"", examples, kept, dict(reasons))


@dataclass(frozen=True)
class JobStatus:
    """Where a fine-tuning job stands.

    Attributes:
        status: one of ``validating_files``, ``queued``, ``running``, ``succeeded``, ``failed``,
            ``cancelled``.
        model: the resulting model's id, once it succeeded.
        error: why it failed, when it did.
        trained_tokens: tokens trained on, when the service reports it.
        progress: the latest progress message (an event, a step, a loss), when there is one.
    """

    status: JobState
    model: str | None = None
    error: str | None = None
    trained_tokens: int | None = None
    progress: str | None = None

    @property
    def done(self) -> bool:
        """True once the job has ended (succeeded, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        """True when the job ended with a model."""
        return self.status == "succeeded"


class FineTuningProvider(ABC):
    """Starts, polls and cancels fine-tuning jobs on one service.

    Errors raised here are logged by the trainer and reported in its round; captured points are
    left untouched, so the next round tries again.
    """

    #: Recorded with each job, so that a job is always polled through the provider that started it.
    name: str = "custom"

    #: Whether :meth:`start` takes a ``token=`` keyword, kept with the job, and :meth:`find` finds
    #: the job by it again. The trainer records the token before the job exists, so a process that
    #: stops between creating a job and recording its id leaves a job the next round can adopt.
    finds_jobs: bool = False

    @abstractmethod
    def start(self, training_file: bytes, *, base_model: str, namespace: str, suffix: str | None = None) -> str:
        """Upload the file and start a job training ``base_model`` on it; returns the job's id."""

    def find(self, token: str, *, namespace: str) -> str | None:
        """The id of the job started with ``token=token``, or None when there is none (or the
        service cannot tell: only providers with :attr:`finds_jobs` look)."""
        return None

    @abstractmethod
    def poll(self, job_id: str) -> JobStatus:
        """The job's current status."""

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """Ask the service to stop the job."""
