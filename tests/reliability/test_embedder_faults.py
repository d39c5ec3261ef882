"""An embedder that raises: the teacher answers, the capture is dropped and counted, and both
routing and capture work again once the embedder does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from _support import ask, train_by_hand

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.routing.embedders import WordLlamaEmbedder
from distillkit.testing import Simulator

STUDENT = "ft:gpt-4.1-nano-2025-04-14:distillkit::embfault"


class BreakableEmbedder:
    """The real default embedder, which raises while ``broken`` is set."""

    def __init__(self) -> None:
        self._inner = WordLlamaEmbedder()
        self.name, self.dim = self._inner.name, self._inner.dim
        self.broken = False

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.broken:
            raise RuntimeError("embedding backend is down")
        return self._inner.embed(texts)


def test_a_raising_embedder_means_the_teacher_answers(simulator: Simulator, config: DistillConfig) -> None:
    embedder = BreakableEmbedder()
    distiller = Distiller(config, embedder=embedder)
    client: Any = distillkit.wrap(simulator.client(), distiller)
    try:
        ask(client, "Where is my new card?")
        train_by_hand(distiller, "default", STUDENT, simulator)

        embedder.broken = True
        response = ask(client, "Where is my new card?")
        assert response.model == "gpt-4.1" and response.choices[0].message.content == "Answer: Where is my new card?"
        assert distillkit.route_info(response).reason == "lookup failed: RuntimeError"
        unrouted = ask(client, "A question for the teacher only", distillkit={"route": False})
        assert unrouted.model == "gpt-4.1"
        assert distiller.flush(10)
        stats = distiller.stats()["default"]
        assert stats.dropped == 2 and stats.store_errors == 1

        embedder.broken = False
        assert ask(client, "Where is my new card?").model == STUDENT
        ask(client, "How do I close my account?")
        assert distiller.flush(10)
        assert distiller.store.count(namespace="default") == 2
    finally:
        distiller.close()
