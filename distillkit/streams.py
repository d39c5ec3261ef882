"""Responses as distillkit reads them: the assistant message of a completion, and stream proxies.

A streamed answer is rebuilt from its chunks by a :class:`StreamAssembler`. A stream proxy hands
every chunk through untouched and finishes exactly once.

A proxy is a :class:`wrapt.ObjectProxy` over the SDK's own ``Stream`` / ``AsyncStream``, so
``isinstance``, attributes (``response``), ``with`` and ``close()`` behave as without distillkit.
Finishing happens once, on exhaustion, ``break`` (the iterator is closed), ``close()`` or an
error; only a stream read to its end counts as complete and may be captured.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import wrapt

from distillkit.routing.request import jsonable

__all__ = ["AsyncStreamProxy", "StreamAssembler", "StreamProxy", "response_message"]

logger = logging.getLogger("distillkit")


def response_message(completion: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The first choice's assistant message as a dict, and its finish reason."""
    choices = getattr(completion, "choices", None) or []
    if not choices:
        return None, None
    choice = choices[0]
    message = choice.message
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [jsonable(call) for call in message.tool_calls]
    if getattr(message, "refusal", None):
        out["refusal"] = message.refusal
    return out, choice.finish_reason


class StreamAssembler:
    """Rebuilds the assistant message of a streamed completion from its chunks."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.content: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: Any) -> None:
        self.model = getattr(chunk, "model", None) or self.model
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = jsonable(usage)
        for choice in getattr(chunk, "choices", None) or []:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta is not None and delta.content:
                self.content.append(delta.content)
            for call in (delta.tool_calls if delta is not None else None) or []:
                slot = self.tool_calls.setdefault(
                    call.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                if call.id:
                    slot["id"] = call.id
                if call.function is not None:
                    slot["function"]["name"] += call.function.name or ""
                    slot["function"]["arguments"] += call.function.arguments or ""
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason

    def message(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None}
        if self.tool_calls:
            out["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return out


#: Called once with the assembled stream and whether it was read to its end.
OnFinish = Callable[[StreamAssembler, bool], None]


class _Finisher:
    """The state shared by the sync and async proxies: assemble chunks, finish once."""

    def __init__(self, on_finish: OnFinish) -> None:
        self.assembler: StreamAssembler | None = StreamAssembler()
        self.on_finish = on_finish
        self.done = False

    def add(self, chunk: Any) -> None:
        if self.assembler is None:
            return
        try:
            self.assembler.add(chunk)
        except Exception:  # our bug must never break the caller's stream
            logger.warning("distillkit could not read a stream chunk; this stream is not captured", exc_info=True)
            self.assembler = None

    def finish(self, completed: bool) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.on_finish(self.assembler or StreamAssembler(), completed and self.assembler is not None)
        except Exception:
            logger.warning("distillkit failed to finish a stream", exc_info=True)


class StreamProxy(wrapt.ObjectProxy):
    """A ``Stream[ChatCompletionChunk]`` that reports its assembled answer when it ends."""

    def __init__(self, stream: Any, on_finish: OnFinish, route: Any = None) -> None:
        super().__init__(stream)
        self._self_finisher = _Finisher(on_finish)
        self._self_iterator: Iterator[Any] | None = None
        self._self_route = route

    def __iter__(self) -> Iterator[Any]:
        finisher = self._self_finisher
        completed = False
        try:
            for chunk in self.__wrapped__:
                finisher.add(chunk)
                yield chunk
            completed = True
        finally:
            finisher.finish(completed)

    def __next__(self) -> Any:
        if self._self_iterator is None:
            self._self_iterator = self.__iter__()
        return next(self._self_iterator)

    def __enter__(self) -> StreamProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_finisher.finish(False)


class AsyncStreamProxy(wrapt.ObjectProxy):
    """An ``AsyncStream[ChatCompletionChunk]`` that reports its assembled answer when it ends."""

    def __init__(self, stream: Any, on_finish: OnFinish, route: Any = None) -> None:
        super().__init__(stream)
        self._self_finisher = _Finisher(on_finish)
        self._self_iterator: AsyncIterator[Any] | None = None
        self._self_route = route

    async def __aiter__(self) -> AsyncIterator[Any]:
        finisher = self._self_finisher
        completed = False
        try:
            async for chunk in self.__wrapped__:
                finisher.add(chunk)
                yield chunk
            completed = True
        finally:
            finisher.finish(completed)

    async def __anext__(self) -> Any:
        if self._self_iterator is None:
            self._self_iterator = self.__aiter__()
        return await self._self_iterator.__anext__()

    async def __aenter__(self) -> AsyncStreamProxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_finisher.finish(False)
