"""Counters per namespace: what was routed, what was captured, what it saved."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PRICES", "NamespaceStats", "Stats", "estimate_cost"]

#: USD per 1M tokens (input, output), from OpenAI's public price list (November 2026), used to
#: estimate savings. Fine-tuned models are billed at their own rates; unknown models cost 0.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "ft:gpt-4.1": (3.00, 12.00),
    "ft:gpt-4.1-mini": (0.80, 3.20),
    "ft:gpt-4.1-nano": (0.20, 0.80),
    "ft:gpt-4o-mini": (0.30, 1.20),
}


def _price(model: str) -> tuple[float, float]:
    # Longest matching prefix, so "gpt-4.1-mini-2025-04-14" finds "gpt-4.1-mini", and
    # "ft:gpt-4.1-nano-2025-04-14:org::id" finds "ft:gpt-4.1-nano".
    best = ""
    for name in PRICES:
        if model.startswith(name) and len(name) > len(best):
            best = name
    return PRICES.get(best, (0.0, 0.0))


def _tokens(usage: Any, name: str) -> int:
    value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
    return int(value or 0)


def estimate_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """Estimated USD cost of a call, from :data:`PRICES`."""
    price_in, price_out = _price(model)
    return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6


@dataclass
class NamespaceStats:
    """What happened in one namespace since the Distiller started."""

    requests: int = 0
    routed: int = 0
    teacher: int = 0
    distilled_failures: int = 0
    #: Routed requests whose student answer failed the cross-check (the teacher answered them).
    cross_check_failures: int = 0
    #: Routed requests whose student answer was less confident than the fitted acceptance asks
    #: (the teacher answered them).
    unsure: int = 0
    captured: int = 0
    dropped: int = 0
    deduplicated: int = 0
    skipped: int = 0
    store_errors: int = 0
    #: Lookups that waited out an index build of the embedded store (the teacher answered them).
    store_busy: int = 0
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)
    cost_usd: float = 0.0
    saved_usd: float = 0.0

    @property
    def routed_share(self) -> float:
        return self.routed / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "routed_share": round(self.routed_share, 4)}


class Stats:
    """Thread-safe counters, one :class:`NamespaceStats` per namespace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_namespace: defaultdict[str, NamespaceStats] = defaultdict(NamespaceStats)

    def after_fork(self) -> None:
        """In a forked child: start from zero (the parent counts its own), with a fresh lock."""
        self._lock = threading.Lock()
        self._by_namespace = defaultdict(NamespaceStats)

    def add(self, namespace: str, **increments: int) -> None:
        with self._lock:
            entry = self._by_namespace[namespace]
            for name, value in increments.items():
                setattr(entry, name, getattr(entry, name) + value)

    def add_usage(self, namespace: str, model: str, usage: Any, teacher_model: str | None = None) -> None:
        """Count a call's tokens; for a distilled call, what the teacher would have cost is saved.

        ``usage`` is the SDK's usage object or a mapping (from a stream), read as it is: this
        runs on the request path, so nothing is converted.
        """
        if not usage:
            return
        prompt, completion = _tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens")
        cost = estimate_cost(model, prompt, completion)
        with self._lock:
            entry = self._by_namespace[namespace]
            tokens = entry.tokens.setdefault(model, {"prompt": 0, "completion": 0})
            tokens["prompt"] += prompt
            tokens["completion"] += completion
            entry.cost_usd += cost
            if teacher_model is not None:
                entry.saved_usd += estimate_cost(teacher_model, prompt, completion) - cost

    def snapshot(self) -> dict[str, NamespaceStats]:
        """A copy of the counters by namespace."""
        with self._lock:
            return {
                ns: NamespaceStats(**{**asdict(s), "tokens": {m: dict(t) for m, t in s.tokens.items()}})
                for ns, s in self._by_namespace.items()
            }
