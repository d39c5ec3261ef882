"""Where the student answers: the :class:`LLMProvider` extension point, named after the original project.

The distilled model is served by the same OpenAI client by default, or by any OpenAI-compatible
server: vLLM, Ollama, llama.cpp, a hosted service. (Training's providers, which make the
model, are in :mod:`distillkit.training.providers`.)
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from distillkit._context import internal_call

__all__ = ["STUDENT_TIMEOUT", "CompatibleServerProvider", "LLMProvider", "SameClientProvider"]

logger = logging.getLogger("distillkit")


class LLMProvider(ABC):
    """Sends a request to the distilled model. Errors raised here make the teacher answer.

    ``kwargs`` are the caller's request keywords with ``model`` replaced by the distilled
    model's name; return exactly what ``client.chat.completions.create(**kwargs)`` returns
    (a ``ChatCompletion``, a ``Stream``, or a raw response), so the caller cannot tell.
    """

    @abstractmethod
    def create(self, client: Any, kwargs: dict[str, Any]) -> Any:
        """Synchronous call; ``client`` is the caller's own (sync) client."""

    @abstractmethod
    async def acreate(self, client: Any, kwargs: dict[str, Any]) -> Any:
        """Asynchronous call; ``client`` is the caller's own (async) client."""


#: Seconds before a student that does not answer is given up for the teacher.
STUDENT_TIMEOUT = 30.0


class SameClientProvider(LLMProvider):
    """The distilled model is served where the teacher is: OpenAI fine-tunes.

    The caller's client is used with its own budget for the student: no SDK retries and a
    ``timeout`` (default :data:`STUDENT_TIMEOUT` seconds), so that a failing student costs one
    attempt before the teacher answers, whatever ``max_retries`` and timeout the caller configured.
    """

    def __init__(self, *, timeout: float = STUDENT_TIMEOUT) -> None:
        self._timeout = timeout

    def _budgeted(self, client: Any) -> Any:
        # The caller's own timeout still wins when it is shorter.
        caller = getattr(client, "timeout", None)
        seconds = caller if isinstance(caller, (int, float)) else getattr(caller, "read", None)
        timeout = min(self._timeout, seconds) if isinstance(seconds, (int, float)) else self._timeout
        return client.with_options(max_retries=0, timeout=timeout)

    def create(self, client: Any, kwargs: dict[str, Any]) -> Any:
        with internal_call():
            return self._budgeted(client).chat.completions.create(**kwargs)

    async def acreate(self, client: Any, kwargs: dict[str, Any]) -> Any:
        with internal_call():
            return await self._budgeted(client).chat.completions.create(**kwargs)


class CompatibleServerProvider(LLMProvider):
    """Any OpenAI-compatible server, from ``DISTILLKIT_DISTILLED_BASE_URL`` / ``_API_KEY``.

    The SDK's retries are off (``max_retries=0``): when the student is down the teacher should
    answer at once, not after back-off. An ``AsyncOpenAI`` is bound to the event loop it first
    ran on, so one is kept per loop.

    Args:
        base_url: e.g. ``http://localhost:8000/v1`` for vLLM.
        api_key: the server's key; many local servers accept any value.
        timeout: seconds before giving up on the student and asking the teacher.
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = STUDENT_TIMEOUT) -> None:
        self.base_url = base_url
        self._api_key = api_key or "not-needed"
        self._timeout = timeout
        #: Called with a model the server answered 404 for; True when it registered it again (a
        #: restarted student server forgets the adapters loaded into it). Set by the Distiller.
        self.register_again: Callable[[str], bool] | None = None
        self._tried: dict[str, float] = {}
        self._sync: Any = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:  # never show the key
        return f"CompatibleServerProvider(base_url={self.base_url!r})"

    def _client(self, asynchronous: bool) -> Any:
        import openai

        if asynchronous:
            loop = asyncio.get_running_loop()
            client = self._async.get(loop)
            if client is None:
                client = self._async[loop] = openai.AsyncOpenAI(
                    base_url=self.base_url, api_key=self._api_key, max_retries=0, timeout=self._timeout
                )
            return client
        if self._sync is None:
            self._sync = openai.OpenAI(
                base_url=self.base_url, api_key=self._api_key, max_retries=0, timeout=self._timeout
            )
        return self._sync

    def create(self, client: Any, kwargs: dict[str, Any]) -> Any:
        import openai

        with internal_call():
            try:
                return self._client(False).chat.completions.create(**kwargs)
            except openai.NotFoundError:
                if not self._registered_again(str(kwargs.get("model"))):
                    raise
                return self._client(False).chat.completions.create(**kwargs)

    async def acreate(self, client: Any, kwargs: dict[str, Any]) -> Any:
        import openai

        with internal_call():
            try:
                return await self._client(True).chat.completions.create(**kwargs)
            except openai.NotFoundError:
                if not await asyncio.to_thread(self._registered_again, str(kwargs.get("model"))):
                    raise
                return await self._client(True).chat.completions.create(**kwargs)

    def _registered_again(self, model: str) -> bool:
        """Register ``model`` with the server again, at most once a minute per model."""
        now = time.monotonic()
        if self.register_again is None or now - self._tried.get(model, -math.inf) < 60.0:
            return False
        self._tried[model] = now
        try:
            return self.register_again(model)
        except Exception as exc:  # the teacher answers this request; the warning says why
            logger.warning("distillkit: could not register %s with the student server again: %s", model, exc)
            return False
