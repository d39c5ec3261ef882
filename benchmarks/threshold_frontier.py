"""How far a similarity threshold alone can route BANKING77 with the default embedder.

For each training size (queries per intent, seeded sample of all 77 intents), every test query's
nearest training query by the default embedder (int8 all-MiniLM-L6-v2): the share whose similarity
reaches each threshold (coverage) and, of those, the share whose neighbour has the right intent
(the agreement of a student that answers like its neighbour). No model is trained.

    python benchmarks/threshold_frontier.py
"""

from __future__ import annotations

import random

import numpy as np
from _data import banking77

from distillkit.routing.embedders import MiniLMEmbedder

THRESHOLDS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


def main() -> None:
    embedder = MiniLMEmbedder()
    rng = random.Random(0)
    train: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    for text, intent in banking77("train"):
        train.setdefault(intent, []).append(text)
    for text, intent in banking77("test"):
        test.setdefault(intent, []).append(text)
    queries = [(text, intent) for intent in sorted(test) for text in rng.sample(test[intent], 10)]
    asked = np.stack([embedder.embed([text])[0] for text, _ in queries])
    print("per intent | " + " | ".join(f"{t:.2f}" for t in THRESHOLDS) + "   (coverage / neighbour precision)")
    for per_intent in (16, 40):
        known = [
            (text, intent)
            for intent in sorted(train)
            for text in rng.sample(train[intent], min(per_intent, len(train[intent])))
        ]
        stored = np.stack([embedder.embed([text])[0] for text, _ in known])
        scores = asked @ stored.T
        nearest, best = scores.argmax(1), scores.max(1)
        right = np.array([known[j][1] == queries[i][1] for i, j in enumerate(nearest)])
        cells = []
        for threshold in THRESHOLDS:
            routed = best >= threshold
            cells.append(f"{routed.mean():.3f} / {right[routed].mean() if routed.any() else 0.0:.3f}")
        print(f"{per_intent:>10} | " + " | ".join(cells))
    print("command: python benchmarks/threshold_frontier.py")


if __name__ == "__main__":
    main()
