"""The simulated-student demo (``distillkit demo --student simulated``): routing and rounds in seconds.

OpenAI's fine-tuning API is simulated; the "fine-tuned model" answers with the teacher's own
answer function, so it shows the routing and the rounds, not whether a student learns.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, TextIO

import distillkit
from distillkit.config import DistillConfig
from distillkit.demo.sample import TEACHER, RunResult, group_by_intent, load_sample
from distillkit.distiller import Distiller

__all__ = ["SYSTEM", "DemoResult", "canned_answer", "run"]

SYSTEM = "You are the support assistant of an online bank. Answer in two sentences."


def canned_answer(intent: str) -> str:
    """The teacher's answer for an intent: the same for every request of that intent."""
    topic = intent.replace("_", " ").replace("?", "")
    return f"About {topic}: open the app, go to Help > {topic.title()}, and follow the steps shown there."


@dataclass
class DemoResult(RunResult):
    """What the simulated demo measured."""

    routed_trained_intent: int = 0
    routed_same_intent: int = 0
    teacher_tokens: int = 0
    student_tokens: int = 0

    @property
    def precision(self) -> float:
        """Share of routed requests whose intent had been trained."""
        return self.routed_trained_intent / self.routed if self.routed else 1.0


def run(
    requests: int = 1200,
    round_every: int = 200,
    *,
    seed: int = 7,
    out: TextIO = sys.stdout,
    threshold: float | None = None,
) -> DemoResult:
    """Run the loop offline and print a live view; returns the figures.

    Args:
        requests: how many customer requests to send.
        round_every: run a training round after this many requests.
        seed: the stream's random order.
        out: where the live view goes.
        threshold: routing threshold (default: the configured default).
    """
    from distillkit.testing import Reply, Simulator
    from distillkit.training import OpenAIFineTuningProvider

    sample = load_sample()
    intent_of = dict(sample)
    by_intent = group_by_intent(sample)
    intents = sorted(by_intent)
    rng = random.Random(seed)
    rng.shuffle(intents)

    def teacher(request: dict[str, Any]) -> Reply:
        text = request["messages"][-1]["content"]
        return Reply(content=canned_answer(intent_of.get(text, "other")))

    result = DemoResult()
    started = time.perf_counter()
    with Simulator(answer=teacher, job_step_seconds=0.02) as sim, tempfile.TemporaryDirectory() as folder:
        config = DistillConfig(path=folder, min_examples=20, namespace="support")
        if threshold is not None:
            config = config.replace(threshold=threshold)
        distiller = Distiller(config, fine_tuning_provider=OpenAIFineTuningProvider(sim.client()))
        client = distillkit.wrap(sim.client(), distiller)
        trained_intents: set[str] = set()
        out.write(f"distillkit demo: {requests} BANKING77 requests, a training round every {round_every}\n")
        out.write(f"teacher {TEACHER}, threshold {distiller.router.default_threshold}, store {folder}\n\n")
        out.write("routed: share of the round's requests answered by the distilled model; precision: share of\n")
        out.write("those whose intent it was trained on / whose nearest trained neighbour had the same intent\n\n")
        out.write(f"{'round':>5} {'requests':>9} {'routed':>7} {'precision':>15} {'intents':>8}  active model\n")
        window = {"requests": 0, "routed": 0, "good": 0, "same": 0}
        try:
            for i in range(requests):
                # New intents join the stream as it goes: 8 at first, all of them by two thirds in.
                available = intents[: min(len(intents), 8 + (len(intents) - 8) * i * 3 // (2 * requests))]
                intent = rng.choice(available)
                text = rng.choice(by_intent[intent])
                response = client.chat.completions.create(
                    model=TEACHER, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
                )
                info = distillkit.route_info(response)
                result.requests += 1
                window["requests"] += 1
                tokens = response.usage.total_tokens if response.usage else 0
                if info is not None and info.routed:
                    result.routed += 1
                    window["routed"] += 1
                    result.student_tokens += tokens
                    good = intent in trained_intents
                    result.routed_trained_intent += good
                    window["good"] += good
                    neighbour = distiller.store.retrieve([str(info.neighbour_id)])[0].payload["query"]
                    same = intent_of.get(neighbour) == intent
                    result.routed_same_intent += same
                    window["same"] += same
                else:
                    result.teacher_tokens += tokens
                if (i + 1) % round_every == 0 or i + 1 == requests:
                    rounds = distiller.train_now(wait=True, timeout=30)
                    trained_intents = {
                        intent_of[p.payload["query"]]
                        for p in distiller.store.scroll(namespace="support", indexed=True)
                        if p.payload["query"] in intent_of
                    }
                    active = distiller.registry.get("support")
                    share = window["routed"] / window["requests"]
                    routed = window["routed"]
                    precision = f"{window['good'] / routed:.0%} / {window['same'] / routed:.0%}" if routed else "-"
                    result.rounds.append(
                        {
                            "requests": i + 1,
                            "routed_share": share,
                            "precision": precision,
                            "jobs": [r.status for r in rounds],
                        }
                    )
                    out.write(
                        f"{len(result.rounds):>5} {i + 1:>9} {share:>7.0%} {precision:>15} "
                        f"{len(trained_intents):>3}/{len(available):<4}  {active.model if active else '-'}\n"
                    )
                    out.flush()
                    window = {"requests": 0, "routed": 0, "good": 0, "same": 0}
            stats = distiller.stats("support")["support"]
            result.saved_usd, result.cost_usd = stats.saved_usd, stats.cost_usd
        finally:
            distillkit.unwrap(client)
            distiller.close()
    result.seconds = time.perf_counter() - started
    without = result.cost_usd + result.saved_usd
    out.write(
        f"\n{result.requests} requests in {result.seconds:.1f} s: {result.routed_share:.0%} answered by the "
        f"distilled model; {result.precision:.1%} of those were of an intent it had been trained on "
        f"({result.routed_same_intent / max(result.routed, 1):.1%} matched their neighbour's intent).\n"
        f"Tokens: {result.teacher_tokens} by the teacher, {result.student_tokens} by the distilled model.\n"
        f"Estimated cost ${result.cost_usd:.4f} instead of ${without:.4f} with the teacher alone "
        f"(saved {result.saved_usd / without if without else 0:.0%}; prices in distillkit.stats.PRICES).\n"
    )
    return result
