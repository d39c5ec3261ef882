"""The demo's stream: a BANKING77 sample shipped in the package, and the teacher model's name."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

__all__ = ["TEACHER", "RunResult", "group_by_intent", "load_sample"]

#: The model name the demo's requests ask for (the simulator plays it).
TEACHER = "gpt-4.1"


@dataclass
class RunResult:
    """What both demos measure: requests, how many the student answered, rounds, cost, time."""

    requests: int = 0
    routed: int = 0
    rounds: list[dict[str, Any]] = field(default_factory=list)
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    seconds: float = 0.0

    @property
    def routed_share(self) -> float:
        return self.routed / self.requests if self.requests else 0.0


def load_sample() -> list[tuple[str, str]]:
    """(text, intent) rows of the packaged BANKING77 sample (CC BY 4.0, see data/BANKING77.md)."""
    text = resources.files("distillkit").joinpath("data/banking77_sample.csv").read_text(encoding="utf-8")
    return [(row["text"], row["category"]) for row in csv.DictReader(io.StringIO(text))]


def group_by_intent(sample: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The sample's texts by intent, in the sample's order."""
    by_intent: dict[str, list[str]] = {}
    for text, intent in sample:
        by_intent.setdefault(intent, []).append(text)
    return by_intent
