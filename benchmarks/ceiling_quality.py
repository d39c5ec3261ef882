"""How far can any neighbour rule over a frozen embedder go? An upper bound for bench_quality's static condition.

For each seed's BANKING77 split (as in ``bench_quality.py``: half the intents known, their TRAIN
queries trained, every TEST query asked, nothing captured), every test query gets a score from its
nearest trained neighbours, and the threshold is then chosen *on the test labels themselves*: the
coverage printed is the most that a rule ranking queries by that score could reach with precision
≥ ``--precision``. No real rule can beat its own oracle, so a score whose bound stays under the
goal cannot meet it with any threshold. This is an analysis with exact cosine over in-memory
embeddings, not the router's code (``bench_quality.py`` measures that).

    python benchmarks/ceiling_quality.py [--embedders wordllama minilm] [--seeds 0 1 2 3 4 5] [--precision 0.95]
"""

from __future__ import annotations

import argparse
import random
import statistics

import numpy as np
from _data import banking77
from bench_quality import embedders


def oracle_coverage(score: np.ndarray, known: np.ndarray, precision: float) -> float:
    """Most known-query coverage over thresholds on ``score`` (higher = route first) at that precision."""
    ranked = known[np.argsort(-score, kind="stable")]
    routed_known = np.cumsum(ranked)
    reached = routed_known / np.arange(1, len(ranked) + 1) >= precision
    return float(routed_known[reached].max() / known.sum()) if reached.any() else 0.0


def scores(similarities: np.ndarray, answers: np.ndarray) -> dict[str, np.ndarray]:
    """Scores from the 10 nearest trained neighbours' similarities and answers (best first)."""
    top1 = similarities[:, 0]
    found = {"top1 similarity": top1, "mean of top 5": similarities[:, :5].mean(1)}
    for k in (3, 5, 10):
        share = (answers[:, :k] == answers[:, :1]).mean(1)  # neighbours agreeing with the nearest
        for weight in (0.02, 0.05, 0.1):
            found[f"top1 + {weight} x agreeing share of {k}"] = top1 + weight * share
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--embedders", nargs="+", default=["wordllama", "minilm"], choices=["wordllama", "minilm"])
    parser.add_argument("--precision", type=float, default=0.95)
    args = parser.parse_args()

    train, test = banking77("train"), banking77("test")
    train_intents = np.array([intent for _, intent in train])
    test_intents = np.array([intent for _, intent in test])
    intents = sorted(set(train_intents))
    for embedder in embedders(args.embedders):
        train_vectors = embedder.embed([text for text, _ in train])
        test_vectors = embedder.embed([text for text, _ in test])
        bounds: dict[str, list[float]] = {}
        for seed in args.seeds:
            known_intents = random.Random(seed).sample(intents, len(intents) // 2)
            trained = np.isin(train_intents, known_intents)
            similarity = test_vectors @ train_vectors[trained].T
            nearest = np.argsort(-similarity, axis=1)[:, :10]
            ranked = np.take_along_axis(similarity, nearest, axis=1)
            answers = train_intents[trained][nearest]
            known = np.isin(test_intents, known_intents)
            for name, score in scores(ranked, answers).items():
                bounds.setdefault(name, []).append(oracle_coverage(score, known, args.precision))
        print(f"\n{embedder.name}: most coverage of known traffic at precision >= {args.precision}, per seed")
        print(f"{'score':<36}{'mean':>7}{'worst':>7}   seeds {' '.join(map(str, args.seeds))}")
        for name, values in sorted(bounds.items(), key=lambda item: -statistics.mean(item[1])):
            per_seed = " ".join(f"{v:.3f}" for v in values)
            print(f"{name:<36}{statistics.mean(values):>7.3f}{min(values):>7.3f}   {per_seed}")
    print(
        "\nreproduce: python benchmarks/ceiling_quality.py "
        f"--embedders {' '.join(args.embedders)} --seeds {' '.join(map(str, args.seeds))} --precision {args.precision}"
    )


if __name__ == "__main__":
    main()
