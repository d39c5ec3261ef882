"""``wrap`` / ``unwrap``: intercept ``chat.completions.create`` with wrapt, reversibly.

The patch sits on the SDK's ``Completions.create`` / ``AsyncCompletions.create`` classes, so
that calls inside a :func:`distillkit.scope` are seen on any client, and on ``copy`` /
``with_options`` of the client classes, so that copies of a wrapped client stay wrapped.
A client that is neither wrapped nor inside a scope goes straight through (one dictionary
look-up). The patch is removed again when the last wrapped client is unwrapped outside any scope.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, TypeVar

import wrapt

from distillkit._context import current_options, is_internal
from distillkit.distiller import Distiller, default_distiller
from distillkit.errors import ConfigError
from distillkit.options import Options
from distillkit.pipeline import Intercepted

__all__ = ["install", "is_wrapped", "uninstall", "unwrap", "wrap"]

C = TypeVar("C")

_lock = threading.RLock()
#: client -> the options given to ``wrap()`` (including the Distiller, when one was given).
_wrapped_clients: weakref.WeakKeyDictionary[Any, Options] = weakref.WeakKeyDictionary()
#: (owner class, attribute) -> the original attribute, for every patch in place.
_originals: dict[tuple[type, str], Any] = {}


def wrap(client: C, distiller: Distiller | None = None, **options: Any) -> C:
    """Intercept the chat completions of an ``OpenAI`` or ``AsyncOpenAI`` client; returns it.

    The same object comes back, so nothing else in the program changes. Wrapping twice is a
    no-op (new options replace the old ones); :func:`unwrap` undoes it.

    Args:
        client: an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` (or a subclass such as Azure's).
        distiller: the :class:`~distillkit.Distiller` to use; default: :func:`default_distiller`.
        **options: default :class:`~distillkit.options.Options` for this client's calls
            (``namespace``, ``threshold``, ``route``, ``capture``, ``key``).

    Example:
        >>> client = distillkit.wrap(OpenAI(), namespace="support")  # doctest: +SKIP
    """
    from openai import AsyncOpenAI, OpenAI

    if not isinstance(client, (OpenAI, AsyncOpenAI)):
        raise ConfigError(
            f"wrap() takes an openai.OpenAI or openai.AsyncOpenAI client, not {type(client).__name__}.",
            variable="client",
            fix="Pass the client itself: distillkit.wrap(OpenAI()).",
        )
    if distiller is None:
        distiller = default_distiller()  # built now so that bad configuration fails here, not mid-call
    binding = Options.from_mapping(options, where="wrap()").over(None)
    binding = Options(**{**binding.__dict__, "distiller": distiller})
    with _lock:
        install(type(client))
        _wrapped_clients[client] = binding
    return client


def unwrap(client: C) -> C:
    """Stop intercepting this client's calls (outside scopes); returns it. Safe to call twice."""
    with _lock:
        _wrapped_clients.pop(client, None)
        if not _wrapped_clients and not _Scopes.active:
            uninstall()
    return client


def is_wrapped(client: Any) -> bool:
    """Whether ``wrap()`` is in effect for this client."""
    return client in _wrapped_clients


# --- patching -------------------------------------------------------------------------------


def install(client_class: type | None = None) -> None:
    """Put the class-level patches in place (idempotent). ``scope()`` and ``wrap()`` call this."""
    from openai import AsyncOpenAI, OpenAI
    from openai.resources.chat.completions import AsyncCompletions, Completions

    with _lock:
        _patch(Completions, "create", _sync_create)
        _patch(AsyncCompletions, "create", _async_create)
        for cls in {OpenAI, AsyncOpenAI, client_class or OpenAI}:
            _patch(cls, "copy", _copy)
            _patch(cls, "with_options", _copy)


def uninstall() -> None:
    """Remove every patch of ours that is still on top, restoring the SDK's own attribute.

    Another library (Langfuse, OpenTelemetry) may have patched the same attribute after us:
    restoring the original would remove its patch too. Then ours stays underneath theirs and
    passes every call straight through while no client is wrapped and no scope is open.
    """
    with _lock:
        for (owner, name), original in list(_originals.items()):
            position = _our_position(owner, name)
            if position == "top":
                if original is _INHERITED:
                    delattr(owner, name)
                else:
                    setattr(owner, name, original)
            elif position == "under":
                continue  # kept, so that a later install() does not stack a second wrapper
            del _originals[(owner, name)]


_OUR_WRAPPERS: set[Any] = set()


def _our_position(owner: type, name: str) -> str | None:
    """Where our wrapper sits on ``owner.name``: ``"top"``, ``"under"`` another patch, or None."""
    current = owner.__dict__.get(name)
    depth = 0
    while current is not None and hasattr(current, "__wrapped__"):  # wrapt's FunctionWrapper and proxies
        if getattr(current, "_self_wrapper", None) in _OUR_WRAPPERS:
            return "top" if depth == 0 else "under"
        current = getattr(current, "__wrapped__", None)
        depth += 1
    return None


_INHERITED = object()


def _patch(owner: type, name: str, wrapper: Any) -> None:
    if (owner, name) in _originals:
        return  # never stack two wrappers
    _originals[(owner, name)] = owner.__dict__.get(name, _INHERITED)
    _OUR_WRAPPERS.add(wrapper)
    wrapt.wrap_function_wrapper(owner, name, wrapper)


class _Scopes:
    """How many scopes are open anywhere: the patch stays while one is."""

    active = 0


def scope_entered() -> None:
    """Called by ``scope.__enter__``: calls inside are intercepted on any client."""
    with _lock:
        _Scopes.active += 1
        install()


def scope_exited() -> None:
    with _lock:
        _Scopes.active -= 1


def _copy(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    new = wrapped(*args, **kwargs)
    binding = _wrapped_clients.get(instance)
    if binding is not None:
        _wrapped_clients[new] = binding
    return new


# --- the interception point -----------------------------------------------------------------


def _intercept(instance: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Intercepted | None]:
    """Strip the ``distillkit=`` keyword and decide whether this call is ours at all."""
    per_call = kwargs.pop("distillkit", None) if "distillkit" in kwargs else None
    if is_internal():
        return kwargs, None
    client = instance._client
    binding = _wrapped_clients.get(client)
    scoped = current_options()
    if binding is None and scoped is None:
        return kwargs, None
    options = scoped.over(binding) if scoped is not None else binding
    if per_call is not None:
        options = Options.from_mapping(per_call, where="distillkit=").over(options)
    return kwargs, Intercepted(client, kwargs, options)  # type: ignore[arg-type]


def _distiller(call: Intercepted) -> Distiller:
    return call.options.distiller if call.options.distiller is not None else default_distiller()


def _sync_create(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    kwargs, call = _intercept(instance, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)
    return _distiller(call).pipeline.handle(call, lambda **kw: wrapped(*args, **kw))


async def _async_create(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    kwargs, call = _intercept(instance, kwargs)
    if call is None:
        return await wrapped(*args, **kwargs)
    return await _distiller(call).pipeline.ahandle(call, lambda **kw: wrapped(*args, **kw))
