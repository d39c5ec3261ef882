"""``scope()`` and ``@distilled``: options that travel with the code rather than with a client.

Inside a scope, calls on any OpenAI client are intercepted (the class-level patch of
:mod:`distillkit.intercept` is in place while a scope is open anywhere).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from distillkit import intercept
from distillkit._context import options_var
from distillkit.errors import ConfigError
from distillkit.options import KeyFunction, Options

if TYPE_CHECKING:
    from distillkit.distiller import Distiller

__all__ = ["distilled", "scope"]

F = TypeVar("F", bound=Callable[..., Any])

#: The scopes entered in this context, innermost last, with the options each one replaced.
_entered: contextvars.ContextVar[tuple[tuple[scope, Options | None], ...]] = contextvars.ContextVar(
    "distillkit_scopes", default=()
)


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

    def __enter__(self) -> Options:
        intercept.scope_entered()
        previous = options_var.get()
        merged = self.options.over(previous)
        # Kept per context, not on the object: one scope may be entered by several threads or tasks.
        _entered.set((*_entered.get(), (self, previous)))
        options_var.set(merged)
        return merged

    def __exit__(self, *exc: object) -> None:
        stack = _entered.get()
        index = next((i for i in range(len(stack) - 1, -1, -1) if stack[i][0] is self), None)
        if index is not None:
            options_var.set(stack[index][1])
            _entered.set(stack[:index] + stack[index + 1 :])
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

    The namespace defaults to ``"<module>.<qualified name>"`` when none is given, so each
    decorated function gets its own distilled model. Moving or renaming such a function
    starts a new namespace: its model and captured data stay under the old name. Give
    ``namespace=`` explicitly for anything that must outlive a refactoring::

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
