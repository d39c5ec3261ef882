"""Routing options and how they layer: the per-call keyword, ``scope()`` / ``@distilled``, ``wrap()``.

The active scope's options live in a :class:`contextvars.ContextVar` (:mod:`distillkit._context`),
so they follow asyncio tasks and threads started with a copied context.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from distillkit.errors import ConfigError

if TYPE_CHECKING:
    from distillkit.distiller import Distiller

__all__ = ["KeyFunction", "Options"]

#: Computes the text to embed from a request's messages (default: the last user message).
KeyFunction = Callable[[Sequence[Mapping[str, Any]]], str]


@dataclass(frozen=True)
class Options:
    """Routing options; ``None`` means "inherit from the enclosing level".

    Levels, innermost wins: the per-call ``distillkit={...}`` keyword, the innermost ``scope`` /
    ``@distilled``, the options given to ``wrap()``, then the :class:`~distillkit.DistillConfig`.

    Attributes:
        namespace: which distilled model and which training data the call belongs to.
        threshold: minimum similarity to route to the distilled model.
        route: False never routes (the teacher answers); the call is still captured.
        capture: False never stores the teacher's answer.
        key: a function of the messages that returns the text to embed.
        distiller: the :class:`~distillkit.Distiller` that handles the call.
    """

    namespace: str | None = None
    threshold: float | None = None
    route: bool | None = None
    capture: bool | None = None
    key: KeyFunction | None = None
    distiller: Distiller | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not (
            isinstance(self.threshold, (int, float)) and 0.0 <= self.threshold <= 1.0
        ):
            raise ConfigError(
                f"threshold={self.threshold!r} is outside [0, 1].",
                variable="threshold",
                fix="Use a cosine similarity between 0 and 1, for example 0.9.",
            )
        if self.namespace is not None and (not isinstance(self.namespace, str) or not self.namespace):
            raise ConfigError(f"namespace={self.namespace!r} is not a non-empty string.", variable="namespace")
        if self.key is not None and not callable(self.key):
            raise ConfigError(
                f"key={self.key!r} is not callable.",
                variable="key",
                fix="Pass a function of the messages that returns the text to embed.",
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, where: str) -> Options:
        """Options from a dict, rejecting unknown keys with the list of accepted ones."""
        if isinstance(values, Options):
            return values
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where} must be a dict of options, not {type(values).__name__}.", variable=where)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{where} got unknown option(s) {', '.join(unknown)}.",
                variable=where,
                fix=f"Accepted: {', '.join(sorted(known))}.",
            )
        return cls(**values)

    def over(self, outer: Options | None) -> Options:
        """These options layered over ``outer``: a value set here wins."""
        if outer is None:
            return self
        changes = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return replace(outer, **changes) if changes else outer
