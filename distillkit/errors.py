"""One exception hierarchy for everything distillkit itself raises.

OpenAI's own exceptions are never wrapped: a caller sees exactly what the SDK raised.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DistillkitError",
    "EmbedderMismatchError",
    "FineTuningUnavailableError",
    "StoreBusyError",
    "StoreError",
    "StoreLockedError",
    "TrainingError",
]


class DistillkitError(Exception):
    """Base class of every error distillkit raises.

    Attributes:
        fix: one sentence that says what to do about it, when there is one.
    """

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.fix = fix
        super().__init__(f"{message} {fix}" if fix else message)


class ConfigError(DistillkitError, ValueError):
    """A configuration value is invalid. ``variable`` names the setting to change."""

    def __init__(self, message: str, *, variable: str | None = None, fix: str | None = None) -> None:
        self.variable = variable
        super().__init__(message, fix=fix)


class EmbedderMismatchError(ConfigError):
    """The store was built with another embedder than the one configured now."""


class StoreError(DistillkitError):
    """The vector store failed or is unreachable."""


class StoreLockedError(StoreError):
    """The embedded store folder is already open in another process."""


class StoreBusyError(DistillkitError):
    """The embedded store's engine is building its index and did not answer a lookup in time.

    Not a failure (the store is not reopened): the router answers that request with the teacher.
    """


class TrainingError(DistillkitError):
    """A fine-tuning provider could not build a dataset or run a job."""


class FineTuningUnavailableError(TrainingError):
    """The fine-tuning service refuses to create jobs for this account (not a transient failure).

    OpenAI stops new fine-tuning jobs on 2027-01-06 and has shut some organisations out
    already. The trainer logs this once, starts nothing, and pauses that namespace's rounds
    (``retry_after`` seconds, doubling while the refusal lasts) instead of retrying each round.
    """

    def __init__(self, message: str, *, fix: str | None = None, retry_after: float = 3600.0) -> None:
        super().__init__(message, fix=fix)
        self.retry_after = retry_after
