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


def train_by_hand(distiller: Distiller, namespace: str, model: str, simulator: Any) -> list[str]:
    """Do what a successful training job does: flip the pending points and activate ``model``.

    Returns the flipped ids. The simulator learns to serve ``model``.
    """
    from distillkit.state import ActiveModel

    assert distiller.flush(10)
    ids = [p.id for p in distiller.store.scroll(namespace=namespace, indexed=False)]
    distiller.store.set_payload(ids, {"indexed": True, "distilled_model": model, "job_id": "by-hand"})
    distiller.registry.activate(ActiveModel(namespace, model, trained_count=len(ids)))
    simulator.add_model(model)
    return ids


#: Three paraphrases of one request: what a namespace trained "by hand" knows.
KNOWN = ["Where is my new card?", "My card has still not arrived", "How long does card delivery take?"]


def train_known(client: Any, distiller: Distiller, model: str, simulator: Any) -> list[str]:
    """Ask the teacher :data:`KNOWN` through ``client`` (captured), then :func:`train_by_hand` them as ``model``."""
    for text in KNOWN:
        ask(client, text)
    return train_by_hand(distiller, "default", model, simulator)
