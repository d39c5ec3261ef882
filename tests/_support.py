"""Small helpers shared by the tests (plain functions, no fixtures)."""

from __future__ import annotations

from typing import Any

from distillkit import Distiller


def ask(client: Any, text: str, **kwargs: Any) -> Any:
    """One chat call with a single user message."""
    return client.chat.completions.create(
        model=kwargs.pop("model", "gpt-4.1"), messages=[{"role": "user", "content": text}], **kwargs
    )


class Captures:
    """Records what a Distiller captured (through its public ``on("capture")`` hook)."""

    def __init__(self, distiller: Distiller) -> None:
        self.distiller = distiller
        self.items: list[Any] = []
        distiller.on("capture", self.items.append)

    def flushed(self) -> list[Any]:
        assert self.distiller.flush(10)
        return self.items
