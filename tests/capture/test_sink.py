"""The capture sink: near-duplicates of the batch and of stored points only raise a count."""

from __future__ import annotations

from distillkit import Distiller
from distillkit.capture.sink import Captured
from distillkit.routing.request import Request


def captured(text: str, namespace: str = "default") -> Captured:
    kwargs = {"model": "gpt-4.1", "messages": [{"role": "user", "content": text}]}
    request = Request(kwargs, namespace=namespace, threshold=None, route=True, capture=True)
    answer = {"role": "assistant", "content": f"About {text}"}
    return Captured(request, kwargs["messages"], answer, "stop", {"total_tokens": 9})


def counts(distiller: Distiller, namespace: str = "default") -> dict[str, int]:
    return {p.payload["query"]: p.payload["count"] for p in distiller.store.scroll(namespace=namespace)}


def test_repeats_within_a_batch_and_of_stored_points_are_counted_once_each(distiller: Distiller) -> None:
    card, close = "Where is my new card?", "How do I close my account?"
    sink = distiller._sink  # one batch, as the writer would hand it over
    sink.write([captured(card), captured(card), captured(close), captured(card), captured(card, "billing")])
    assert counts(distiller) == {card: 3, close: 1}
    assert counts(distiller, "billing") == {card: 1}  # another namespace is another point
    sink.write([captured(card), captured(card), captured("Why was I charged twice?")])
    assert counts(distiller) == {card: 5, close: 1, "Why was I charged twice?": 1}
    stats = distiller.stats()["default"]
    assert (stats.captured, stats.deduplicated) == (3, 4)
