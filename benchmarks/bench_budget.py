"""The error budget on real traffic: routed precision and coverage against the similarity rule.

BANKING77, the static half-known protocol of bench_quality.py: a seeded random half of the intents
is known; their TRAIN queries are the trained points of one namespace (each with its intent's canned
teacher answer) in a real embedded store, and every TEST query is decided, in a seeded random
order, through the router's own code (``Distiller.router.decide``).

The student is simulated as a nearest-neighbour student: it answers a query with the teacher answer
of its nearest trained point, so it is right exactly when that point's intent is the query's. (A
fine-tuned model generalises differently; this bench measures the budget's mechanics, not a model.)

- ``rule``: the default rule (threshold 0.9, agreement, veto), no budget.
- ``budget``: the same router with the error budget at ``--max-error``. Labels come from the
  promotion gate (10% of the TRAIN queries held out: their nearest trained neighbour, and whether
  the student answers them right) and from exploration while the stream runs (``--explore``; a
  routed request is also asked of the teacher, a refused one also of the student; each one a label).

precision: routed answers that are right / routed; coverage: routed known-intent queries / all
known-intent queries; false: routed unknown-intent queries / all unknown; labels: at the end.
"second half" rows count only the second half of the stream (the budget has learnt by then).

    python benchmarks/bench_budget.py [--seeds 0 1 2] [--max-error 0.05] [--explore 0.02]

Measured (November 2026, 2 shared cores; ``--seeds 0 1``, defaults; precision / coverage / false):

    seed 0  rule    all 0.923 / 0.456 / 0.021   second half 0.908 / 0.454 / 0.024
    seed 0  budget  all 0.939 / 0.062 / 0.002   second half 1.000 / 0.000 / 0.000   834 labels, closed
    seed 1  rule    all 0.935 / 0.489 / 0.021   second half 0.921 / 0.470 / 0.024
    seed 1  budget  all 0.972 / 0.069 / 0.001   second half 1.000 / 0.000 / 0.000   804 labels, closed

With ``--max-error 0.1 --explore 0.3``, seed 0: second half 0.901 / 0.092 / 0.003 (11 answer
classes fitted on their own, 11 blocked). This student's answers are right 96% of the time at
similarity >= 0.95 and 89% at 0.90-0.95 (exploration labels): no region holds 5% disagreement at
95% confidence, so the namespace closes; the similarity rule routes there at 8-9% disagreement.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import uuid
from typing import Any

import numpy as np
from _data import banking77

from distillkit import DistillConfig, Distiller
from distillkit.routing.budget import Label, answer_class, answer_key
from distillkit.routing.embedders import WordLlamaEmbedder
from distillkit.routing.request import Request, fingerprint
from distillkit.state import ActiveModel
from distillkit.store import EdgeStore, EmbedderInfo, Point

MODEL = "gpt-4.1"
STUDENT = "ft:gpt-4.1-nano-2025-04-14:bench::budget"
NAMESPACE = "support"


def kwargs_for(text: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Bank support."}, {"role": "user", "content": text}],
    }


def answer(intent: str) -> dict[str, str]:
    return {"role": "assistant", "content": f"Canned answer about {intent}."}


def run(seed: int, budget: bool, max_error: float, explore: float, cache: dict[str, np.ndarray]) -> dict[str, Any]:
    embedder = WordLlamaEmbedder()

    def embed(texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            cache.update(zip(missing, embedder.embed(missing), strict=True))
        return np.stack([cache[t] for t in texts])

    train, test = banking77("train"), banking77("test")
    intents = sorted({intent for _, intent in train})
    known = set(random.Random(seed).sample(intents, len(intents) // 2))
    random.Random(seed).shuffle(test)
    trained = [(text, intent) for text, intent in train if intent in known]
    random.Random(seed + 1000).shuffle(trained)
    held = trained[: len(trained) // 10] if budget else []
    trained = trained[len(held) :]
    task = fingerprint(kwargs_for("x"))
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        store = EdgeStore(folder, EmbedderInfo(embedder.name, embedder.dim))
        vectors = embed([t for t, _ in trained])
        points = [
            Point(
                str(uuid.uuid4()),
                {
                    "namespace": NAMESPACE,
                    "fingerprint": task,
                    "query": text,
                    "response": answer(intent),
                    "indexed": True,
                    "distilled_model": STUDENT,
                },
                vector.tolist(),
            )
            for (text, intent), vector in zip(trained, vectors, strict=True)
        ]
        for start in range(0, len(points), 512):
            store.upsert(points[start : start + 512])

        class Embed:
            name, dim = embedder.name, embedder.dim

            def embed(self, texts: list[str]) -> np.ndarray:
                return embed(list(texts))

        config = DistillConfig(path=folder, max_error=max_error if budget else None, explore_rate=explore)
        distiller = Distiller(config, store=store, embedder=Embed())  # type: ignore[arg-type]
        distiller.registry.activate(ActiveModel(NAMESPACE, STUDENT))
        if budget and distiller.budget is not None:  # the promotion gate's held-out labels
            gate = []
            for (_text, intent), vector in zip(held, embed([t for t, _ in held]), strict=True):
                [hit] = store.search(vector, namespace=NAMESPACE, fingerprint=task, indexed=True, limit=1)
                right = hit.payload["response"] == answer(intent)
                gate.append(Label(hit.score, right, answer_class(answer_key(hit.payload)), "gate"))
            distiller.budget.add(NAMESPACE, gate)
        router = distiller.router
        router._random = rng  # seeded exploration
        rows = []
        for text, intent in test:
            request = Request(kwargs_for(text), namespace=NAMESPACE, threshold=None, route=True, capture=True)
            info = router.decide(request)
            right = None
            if info.neighbour_id is not None:
                [neighbour] = store.retrieve([info.neighbour_id])
                right = neighbour.payload["response"] == answer(intent)
            if budget and request.explore and request.signals is not None and right is not None:
                assert distiller.budget is not None
                signals = request.signals
                label = Label(signals.similarity, right, signals.answer_class, "explore")
                distiller.budget.add(NAMESPACE, [label])
            rows.append((intent in known, info.routed, bool(right)))
        labels = len(distiller.budget.labels(NAMESPACE)) if distiller.budget is not None else 0
        acceptance = distiller.budget.acceptance(NAMESPACE) if distiller.budget is not None else None
        distiller.close()

    def measure(part: list[tuple[bool, bool, bool]]) -> tuple[float, float, float]:
        routed = [r for r in part if r[1]]
        n_known = sum(r[0] for r in part) or 1
        n_unknown = sum(not r[0] for r in part) or 1
        precision = sum(r[2] for r in routed) / len(routed) if routed else 1.0
        return precision, sum(r[0] for r in routed) / n_known, sum(not r[0] for r in routed) / n_unknown

    return {
        "all": measure(rows),
        "second half": measure(rows[len(rows) // 2 :]),
        "labels": labels,
        "fit": acceptance.status if acceptance is not None else "-",
        "threshold": acceptance.threshold if acceptance is not None else None,
        "classes": len(acceptance.classes) if acceptance is not None else 0,
        "blocked": len(acceptance.blocked) if acceptance is not None else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max-error", type=float, default=0.05)
    parser.add_argument("--explore", type=float, default=0.02)
    args = parser.parse_args()
    cache: dict[str, np.ndarray] = {}
    print(f"BANKING77 static half-known, WordLlama, nearest-neighbour student, max_error {args.max_error}")
    print(f"{'seed':<6}{'router':<8}{'part':<13}{'precision':>10}{'coverage':>10}{'false':>8}  budget at the end")
    for seed in args.seeds:
        for budget in (False, True):
            result = run(seed, budget, args.max_error, args.explore, cache)
            end = (
                f"{result['labels']} labels, {result['fit']}, threshold {result['threshold']}, "
                f"{result['classes']} classes on their own, {result['blocked']} blocked"
                if budget
                else ""
            )
            for part in ("all", "second half"):
                precision, coverage, false = result[part]
                name = "budget" if budget else "rule"
                print(f"{seed:<6}{name:<8}{part:<13}{precision:>10.3f}{coverage:>10.3f}{false:>8.3f}  {end}")
                end = ""


if __name__ == "__main__":
    main()
