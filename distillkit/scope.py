"""Per-call options that travel with the code: ``@distilled``, ``scope()`` and the per-call keyword.

Options live in a :class:`contextvars.ContextVar`, so they follow asyncio tasks and threads
started with a copied context (``contextvars.copy_context().run``, ``asyncio.to_thread``).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar, overload

from distillkit.errors import ConfigError

if TYPE_CHECKING:
    from distillkit.distiller import Distiller

__all__ = ["Options", "current_options", "distilled", "scope"]

F = TypeVar("F", bound=Callable[..., Any])

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


_current: contextvars.ContextVar[Options | None] = contextvars.ContextVar("distillkit_options", default=None)


def current_options() -> Options | None:
    """The options of the innermost active scope in this context, or None outside any scope."""
    return _current.get()


class scope:
    """Route the chat calls made inside a ``with`` block under these options.

    Calls on any OpenAI client are intercepted inside a scope, wrapped or not. Scopes nest;
    an inner value wins. Works with ``with`` and ``async with``::

        with distillkit.scope(namespace="support", threshold=0.92):
            client.chat.completions.create(model="gpt-4.1", messages=[...])
    """

    def __init__(
        self,
        namespace: str | None = None,
        *,
        threshold: float | None = None,
        route: bool | None = None,
        capture: bool | None = None,
        key: KeyFunction | None = None,
        distiller: Distiller | None = None,
    ) -> None:
        self.options = Options(namespace, threshold, route, capture, key, distiller)
        self._tokens: list[contextvars.Token[Options | None]] = []

    def __enter__(self) -> Options:
        from distillkit import intercept

        intercept.scope_entered()
        merged = self.options.over(_current.get())
        self._tokens.append(_current.set(merged))
        return merged

    def __exit__(self, *exc: object) -> None:
        from distillkit import intercept

        _current.reset(self._tokens.pop())
        intercept.scope_exited()

    async def __aenter__(self) -> Options:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


@overload
def distilled(func: F, /) -> F: ...
@overload
def distilled(
    *,
    namespace: str | None = None,
    threshold: float | None = None,
    route: bool | None = None,
    capture: bool | None = None,
    key: KeyFunction | None = None,
    distiller: Distiller | None = None,
) -> Callable[[F], F]: ...
def distilled(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Run a function's chat calls inside a :class:`scope`. Bare or with options, sync or async.

    The namespace defaults to the function's qualified name when none is given, so each
    decorated function gets its own distilled model::

        @distillkit.distilled
        def classify(text: str) -> str: ...

        @distillkit.distilled(namespace="support", threshold=0.92)
        async def answer(question: str) -> str: ...
    """
    # Validate eagerly so a typo fails at decoration time, not on the first call.
    Options.from_mapping(options, where="@distilled")

    def decorate(fn: F) -> F:
        opts = dict(options)
        opts.setdefault("namespace", f"{fn.__module__}.{fn.__qualname__}")
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with scope(**opts):
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with scope(**opts):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    if func is not None:
        if not callable(func):
            raise ConfigError(
                "@distilled takes options as keywords only.",
                variable="@distilled",
                fix="Write @distilled(namespace='name'), not @distilled('name').",
            )
        return decorate(func)
    return decorate
