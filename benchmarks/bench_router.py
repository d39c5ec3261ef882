"""The routing decision (embed + search + decide, default rule) at 1k, 10k and 100k points; capture throughput.

Runs the router's own code (``Router.decide``) on the embedded default store (qdrant-edge) and
on qdrant-client's local mode side by side. Stored points: real BANKING77 queries embedded
with the default embedder, each with its intent's canned teacher answer, topped up with random
unit vectors (answers of their own) to reach the size; every ``1 / --untrained``-th point is
traffic not yet trained (``indexed: False``), which the agreement rule's veto searches. Queries:
BANKING77 test queries of the same namespace and task.

    python benchmarks/bench_router.py [--sizes 1000 10000 100000] [--local-sizes 1000 10000] [--queries 300]
                                      [--untrained 0.1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable

import numpy as np
from _data import banking77

from distillkit import DistillConfig, Distiller
from distillkit.capture.sink import Captured
from distillkit.routing.embedders import WordLlamaEmbedder
from distillkit.routing.request import Request, RouteInfo, fingerprint
from distillkit.state import ActiveModel
from distillkit.store import EdgeStore, EmbedderInfo, Point, ServerStore, Store

MODEL = "gpt-4.1"
STUDENT = "ft:gpt-4.1-nano-2025-04-14:bench::x"
NAMESPACES = ("support", "billing", "search", "triage")


def kwargs_for(text: str) -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Bank support."}, {"role": "user", "content": text}],
    }


def fill(store: Store, vectors: np.ndarray, train: list[tuple[str, str]], task: str, untrained: float) -> None:
    """Store ``vectors``: namespaces in turn, a quarter on other tasks, a share ``untrained`` not yet trained."""
    every = round(1 / untrained) if untrained > 0 else 0
    for start in range(0, len(vectors), 512):
        points = []
        for i in range(start, min(start + 512, len(vectors))):
            text, intent = train[i] if i < len(train) else ("", f"random {i}")
            indexed = not every or i % every != every - 1
            points.append(
                Point(
                    str(uuid.uuid4()),
                    {
                        "namespace": NAMESPACES[i % 4],
                        "fingerprint": task if i % 4 != 3 else "other-task",
                        "query": text,
                        "response": {"role": "assistant", "content": f"Canned answer about {intent}."},
                        "indexed": indexed,
                        **({"distilled_model": STUDENT} if indexed else {}),
                    },
                    vectors[i].tolist(),
                )
            )
        store.upsert(points)


def percentiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=100)
    return statistics.median(values), q[98]


def time_decisions(distiller: Distiller, queries: list[str]) -> tuple[float, float, float]:
    """p50 and p99 of one decision in ms, and the routed share."""
    samples, routed = [], 0
    for text in queries:
        request = Request(kwargs_for(text), namespace="support", threshold=None, route=True, capture=True)
        start = time.perf_counter()
        info: RouteInfo = distiller.router.decide(request)
        samples.append(time.perf_counter() - start)
        routed += info.routed
    p50, p99 = percentiles(samples)
    return p50 * 1e3, p99 * 1e3, routed / len(queries)


def capture_throughput(make_store: Callable[[], Store], embedder: WordLlamaEmbedder, texts: list[str]) -> float:
    """Interactions per second through the capture writer (embed, dedup search, upsert)."""
    distiller = Distiller(DistillConfig(path="unused"), store=make_store(), embedder=embedder)
    items = []
    for text in texts:
        request = Request(kwargs_for(text), namespace="support", threshold=None, route=True, capture=True)
        message = {"role": "assistant", "content": f"About: {text}"}
        items.append(Captured(request, request.kwargs["messages"], message, "stop", {"total_tokens": 20}))
    start = time.perf_counter()
    for item in items:
        distiller._writer.submit(item)
    distiller.flush()
    elapsed = time.perf_counter() - start
    distiller.close()
    return len(items) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument(
        "--local-sizes",
        type=int,
        nargs="*",
        default=[1000, 10_000],
        help="sizes for qdrant-client local mode (slow above 10k: ~540 ms a search at 50k)",
    )
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--capture", type=int, default=5000, help="interactions for the capture throughput")
    parser.add_argument("--untrained", type=float, default=0.1, help="share of stored points not yet trained")
    args = parser.parse_args()

    embedder = WordLlamaEmbedder()
    info = EmbedderInfo(embedder.name, embedder.dim)
    labelled = banking77("train")
    train = [t for t, _ in labelled]
    test = [t for t, _ in banking77("test")][: args.queries]
    real = embedder.embed(train)
    rng = np.random.default_rng(0)
    task = fingerprint(kwargs_for("x"))

    def vectors(n: int) -> np.ndarray:
        if n <= len(real):
            return real[:n]
        extra = rng.standard_normal((n - len(real), embedder.dim)).astype(np.float32)
        return np.vstack([real, extra / np.linalg.norm(extra, axis=1, keepdims=True)])

    rows = []
    backends: list[tuple[str, list[int], Callable[[str], Store]]] = [
        ("edge (default)", args.sizes, lambda folder: EdgeStore(folder, info)),
        ("qdrant-client local", args.local_sizes, lambda folder: ServerStore(info, client=_local(folder))),
    ]
    for name, sizes, make in backends:
        for size in sizes:
            with tempfile.TemporaryDirectory() as folder:
                store = make(folder)
                started = time.perf_counter()
                fill(store, vectors(size), labelled, task, args.untrained)
                fill_s = time.perf_counter() - started
                distiller = Distiller(DistillConfig(path=folder), store=store, embedder=embedder)
                distiller.registry.activate(ActiveModel("support", STUDENT))
                time_decisions(distiller, test[:20])  # warm-up
                p50, p99, routed = time_decisions(distiller, test)
                rows.append((name, size, p50, p99, routed, fill_s))
                distiller.close()
                print(f"  {name} {size}: done", flush=True)

    print(f"\nrouting decision (embed + filtered search + decide, default rule), {args.queries} BANKING77 test queries")
    print(f"{'backend':<22}{'points':>9}{'p50 ms':>9}{'p99 ms':>9}{'routed':>8}{'fill s':>8}")
    for name, size, p50, p99, routed, fill_s in rows:
        print(f"{name:<22}{size:>9}{p50:>9.2f}{p99:>9.2f}{routed:>8.2f}{fill_s:>8.1f}")

    print(f"\ncapture writer, {args.capture} interactions (embed, near-duplicate check, upsert), sustained")
    texts = [f"{t} (#{i})" for i, t in enumerate((train * (args.capture // len(train) + 1))[: args.capture])]
    with tempfile.TemporaryDirectory() as folder:
        rate = capture_throughput(lambda: EdgeStore(folder, info), embedder, texts)
    print(f"{'edge (default)':<22}{rate:>9.0f} interactions/s")
    print(
        "\nreproduce: python benchmarks/bench_router.py "
        + " ".join(
            [
                f"--sizes {' '.join(map(str, args.sizes))}",
                f"--local-sizes {' '.join(map(str, args.local_sizes))}",
                f"--queries {args.queries}",
                f"--capture {args.capture}",
                f"--untrained {args.untrained:g}",
            ]
        )
    )


def _local(folder: str):
    from qdrant_client import QdrantClient

    return QdrantClient(path=folder)


if __name__ == "__main__":
    main()
