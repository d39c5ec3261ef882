"""What travels with a call through threads and asyncio tasks: two :class:`contextvars.ContextVar`.

* the options of the innermost :func:`distillkit.scope` (or ``@distilled``) in this context;
* whether distillkit itself is calling the API (embeddings, the student, training jobs, shadow
  checks): such calls are never intercepted.

Imports nothing of distillkit's own, so that any module may use it without an import cycle.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distillkit.options import Options

__all__ = ["current_options", "internal_call", "is_internal", "options_var"]

#: The options of the innermost active scope (None outside any scope).
options_var: contextvars.ContextVar[Options | None] = contextvars.ContextVar("distillkit_options", default=None)
#: True while distillkit itself calls the API: never intercepted.
_internal: contextvars.ContextVar[bool] = contextvars.ContextVar("distillkit_internal", default=False)


def current_options() -> Options | None:
    """The options of the innermost active scope in this context, or None outside any scope."""
    return options_var.get()


def is_internal() -> bool:
    """Whether the current call is distillkit's own (inside :func:`internal_call`)."""
    return _internal.get()


@contextlib.contextmanager
def internal_call() -> Iterator[None]:
    """Mark the calls made inside as distillkit's own: they are never routed nor captured."""
    token = _internal.set(True)
    try:
        yield
    finally:
        _internal.reset(token)
