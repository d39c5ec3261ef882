"""Every routing signal's frontier, from the per-query signals ``bench_stream.py --dump`` wrote.

For each test query the dump holds: known (its intent was streamed), the nearest trained
neighbour's similarity, whether the student's own answer was right, whether it equals the nearest
neighbour's teacher answer (``nearest``) or one of the 5 nearest's (``top5``), how many of the 5
nearest share the nearest one's answer (``agreeing``), and with ``--logprobs`` the lowest token
log-probability of the answer. Printed:

1. **Rules**: the most known traffic routed under each constraint (agreement of routed answers;
   share of never-streamed intents routed), over every similarity threshold 0.60-0.99, neighbour
   agreement 0-5, cross-check none / nearest / top 5 (and token confidence, when in the dump).
2. **A learned acceptor**: logistic regression on the same signals, out of fold (5 folds), its
   score swept the same way: does learning the combination beat the rules?

    python benchmarks/bench_stream.py --dump stream.json
    python benchmarks/stream_frontier.py stream.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from typing import Any

import numpy as np

#: (name, agreement at least, false-route rate at most)
CONSTRAINTS = [
    ("agreement >= 0.96, false routes <= 0.02", 0.96, 0.02),
    ("agreement >= 0.99, false routes <= 0.03", 0.99, 0.03),
    ("agreement >= 0.96 (never-seen intents ignored)", 0.96, 1.0),
]


def measure(rows: list[dict[str, Any]], accept: Callable[[dict[str, Any]], bool]) -> tuple[float, float, float]:
    """(routed share of known traffic, agreement of those routed, false-route rate on unseen)."""
    known = [r for r in rows if r["known"]]
    new = [r for r in rows if not r["known"]]
    routed = [r for r in known if accept(r)]
    agreement = sum(r["correct"] for r in routed) / len(routed) if routed else 0.0
    return len(routed) / max(1, len(known)), agreement, sum(map(accept, new)) / max(1, len(new))


def rules(rows: list[dict[str, Any]]) -> list[tuple[tuple[float, float, float], str]]:
    logprobs = [None] + ([-0.01, -0.1, -0.5, -1.0] if any(r.get("min_logprob") is not None for r in rows) else [])
    out = []
    for t, agreeing, check, lp in itertools.product(
        [x / 100 for x in range(60, 100)], range(6), ["none", "nearest", "top5"], logprobs
    ):

        def accept(r: dict[str, Any], t: float = t, a: int = agreeing, c: str = check, lp: float | None = lp) -> bool:
            ok = r["similarity"] >= t and r["agreeing"] >= a and (c == "none" or r[c])
            return ok and (lp is None or (r.get("min_logprob") is not None and r["min_logprob"] >= lp))

        name = f"similarity >= {t:.2f}, agreeing >= {agreeing}, cross-check {check}"
        out.append((measure(rows, accept), name + (f", min logprob >= {lp}" if lp is not None else "")))
    return out


def acceptor(rows: list[dict[str, Any]], folds: int = 5) -> list[tuple[tuple[float, float, float], str]]:
    """Out-of-fold scores of a logistic regression predicting 'routing this is right'."""

    def features(r: dict[str, Any]) -> list[float]:
        lp = r.get("min_logprob")
        extra = [lp if lp is not None else -5.0] if any(x.get("min_logprob") is not None for x in rows) else []
        return [r["similarity"], r["similarity"] ** 2, r["agreeing"] / 5, float(r["nearest"]), float(r["top5"]), *extra]

    x = np.array([features(r) for r in rows])
    y = np.array([float(r["known"] and r["correct"]) for r in rows])
    fold = np.random.default_rng(0).integers(0, folds, len(rows))
    score = np.zeros(len(rows))
    for f in range(folds):
        train = fold != f
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-9
        z = np.c_[np.ones(train.sum()), (x[train] - mu) / sd]
        w = np.zeros(z.shape[1])
        for _ in range(3000):  # gradient descent on the L2-regularised log loss
            p = 1 / (1 + np.exp(-z @ w))
            w -= 0.5 * (z.T @ (p - y[train]) / len(z) + 1e-3 * w)
        score[~train] = 1 / (1 + np.exp(-(np.c_[np.ones((~train).sum()), (x[~train] - mu) / sd] @ w)))
    for r, s in zip(rows, score, strict=True):
        r["_score"] = float(s)
    return [
        (measure(rows, lambda r, c=c: r["_score"] >= c), f"learned score >= {c:.2f}")
        for c in np.linspace(0.05, 0.99, 95)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dump", help="the JSON file bench_stream.py --dump wrote")
    with open(parser.parse_args().dump, encoding="utf-8") as file:
        rows = json.load(file)
    known = [r for r in rows if r["known"]]
    print(f"{len(known)} test queries of streamed intents, {len(rows) - len(known)} of never-streamed ones")
    print(f"the student alone answers {sum(r['correct'] for r in known) / max(1, len(known)):.3f} of the former right")
    for title, candidates in (("rules", rules(rows)), ("learned acceptor (out of fold)", acceptor(rows))):
        print(title + ":")
        for name, agreement, false_routes in CONSTRAINTS:
            ok = [c for c in candidates if c[0][1] >= agreement and c[0][2] <= false_routes]
            if not ok:
                print(f"  {name}: nothing")
                continue
            (routed, agree, false), how = max(ok, key=lambda c: (c[0][0], c[0][1]))
            print(f"  {name}: routed {routed:.3f} at agreement {agree:.3f}, false routes {false:.3f} ({how})")


if __name__ == "__main__":
    main()
