"""The real-student demo (``distillkit demo``, the default).

SmolLM2-135M-Instruct is trained with LoRA on this machine's CPU every round (a separate
process) and served by the local student server on llama.cpp. Every routed answer is the model's
own generated text, compared word for word with the teacher's answer: the *agreement*. Needs
``distillkit[local]``; a few minutes.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import distillkit
from distillkit.config import DistillConfig
from distillkit.demo.local import LOCAL_BASE_MODEL, MAX_TOKENS, REAL_SYSTEM, local_settings, local_student, short_answer
from distillkit.demo.sample import TEACHER, RunResult, group_by_intent, load_sample
from distillkit.distiller import Distiller

__all__ = ["RealDemoResult", "run_real"]


@dataclass
class RealDemoResult(RunResult):
    """What the real-student demo measured."""

    agreed: int = 0
    train_seconds: float = 0.0

    @property
    def agreement(self) -> float:
        """Share of routed answers identical to the teacher's answer for the request's intent."""
        return self.agreed / self.routed if self.routed else 0.0


def run_real(
    requests: int = 360,
    round_every: int = 120,
    *,
    intents: int = 10,
    seed: int = 7,
    out: TextIO = sys.stdout,
    epochs: int = 3,
) -> RealDemoResult:
    """The demo with the real student: SmolLM2-135M retrained with LoRA after every window of
    ``round_every`` requests, served by the local student server. Returns the figures.

    The teacher (the simulator) gives :func:`short_answer` for each intent; a routed answer
    *agrees* when the student's generated text is exactly that answer.
    """
    from distillkit.testing import Reply, Simulator

    sample = load_sample()
    intent_of = dict(sample)
    by_intent = group_by_intent(sample)
    rng = random.Random(seed)
    chosen = sorted(by_intent)
    rng.shuffle(chosen)
    chosen = chosen[: max(2, intents)]

    def teacher(request: dict[str, Any]) -> Reply:
        return Reply(content=short_answer(intent_of.get(request["messages"][-1]["content"], "other")))

    result = RealDemoResult()
    started = time.perf_counter()
    out.write(
        f"distillkit demo: {requests} BANKING77 requests of {len(chosen)} intents; after every {round_every}, "
        f"{LOCAL_BASE_MODEL} is retrained with LoRA on this machine\n"
        "routed: share of the window's requests answered by the student; agreement: share of those whose\n"
        "generated answer is identical to the teacher's; each window runs on the model the rounds before made\n\n"
    )
    out.write("starting the local student server...\n")
    out.flush()
    with (
        Simulator(answer=teacher) as sim,
        tempfile.TemporaryDirectory() as folder,
        local_student(folder, local_settings(epochs)) as (provider, base_url),
    ):
        config = DistillConfig(
            path=str(Path(folder) / "store"),
            namespace="support",
            min_examples=20,
            base_model=LOCAL_BASE_MODEL,
            distilled_base_url=base_url,
        )
        distiller = Distiller(config, fine_tuning_provider=provider)
        client = distillkit.wrap(sim.client(), distiller)
        header = f"{'window':>6} {'requests':>9} {'routed':>7} {'agreement':>15} {'cost':>9}  then"
        out.write(header + "\n")
        window = {"requests": 0, "routed": 0, "agreed": 0, "cost": 0.0}
        cost_before = 0.0
        try:
            for i in range(requests):
                # New intents join as the stream goes: a third at first, all by two thirds in.
                first = max(1, len(chosen) // 3)
                available = chosen[: min(len(chosen), first + (len(chosen) - first) * i * 3 // (2 * requests))]
                intent = rng.choice(available)
                text = rng.choice(by_intent[intent])
                response = client.chat.completions.create(
                    model=TEACHER,
                    messages=[{"role": "system", "content": REAL_SYSTEM}, {"role": "user", "content": text}],
                    max_tokens=MAX_TOKENS,
                    temperature=0,
                )
                info = distillkit.route_info(response)
                result.requests += 1
                window["requests"] += 1
                if info is not None and info.routed:
                    answer = (response.choices[0].message.content or "").strip()
                    agreed = answer == short_answer(intent)
                    result.routed += 1
                    result.agreed += agreed
                    window["routed"] += 1
                    window["agreed"] += agreed
                if (i + 1) % 10 == 0 and getattr(out, "isatty", lambda: False)():
                    out.write(f"\r  answering {i + 1}/{requests}, {window['routed']} routed in this window")
                    out.flush()
                last = i + 1 == requests
                if (i + 1) % round_every and not last:
                    continue
                stats = distiller.stats("support")["support"]
                cost, cost_before = stats.cost_usd - cost_before, stats.cost_usd
                routed = window["routed"]
                agreement = f"{window['agreed'] / routed:.0%} ({window['agreed']}/{routed})" if routed else "-"
                line = (
                    f"{len(result.rounds) + 1:>6} {i + 1:>9} {window['routed'] / window['requests']:>7.0%} "
                    f"{agreement:>15} {'$' + format(cost, '.4f'):>9}"
                )
                if getattr(out, "isatty", lambda: False)():
                    out.write("\r\x1b[K")
                row: dict[str, Any] = {"requests": i + 1, **window}
                if last:
                    out.write(line + "  (end)\n")
                else:
                    out.write(line + "  training...\n")
                    out.flush()
                    round_started = time.perf_counter()
                    rounds = distiller.train_now(wait=True, timeout=1800, progress=out)
                    took = time.perf_counter() - round_started
                    result.train_seconds += took
                    row["train_seconds"] = took
                    row["jobs"] = [(r.status, r.examples, r.held_out, r.evaluation) for r in rounds]
                    for r in rounds:
                        why = f" - {r.reason}" if r.reason and r.status != "succeeded" else ""
                        verdict = ""
                        if r.evaluation:
                            verdict = f", held-out agreement {r.evaluation.get('agreement', 0):.0%}"
                        out.write(
                            f"{'':>6} round {len(result.rounds) + 1}: {r.status}, {r.examples} examples"
                            f"{verdict}, {took:.0f} s{why}\n"
                        )
                out.flush()
                result.rounds.append(row)
                window = {"requests": 0, "routed": 0, "agreed": 0, "cost": 0.0}
            stats = distiller.stats("support")["support"]
            result.cost_usd, result.saved_usd = stats.cost_usd, stats.saved_usd
        finally:
            distillkit.unwrap(client)
            distiller.close()
    result.seconds = time.perf_counter() - started
    without = result.cost_usd + result.saved_usd
    final = result.rounds[-1] if result.rounds else {}
    last_share = final["routed"] / final["requests"] if final.get("requests") else 0.0
    out.write(
        f"\n{result.requests} requests in {result.seconds:.0f} s ({result.train_seconds:.0f} s of it training). "
        f"Estimated cost ${result.cost_usd:.4f} instead of ${without:.4f} with the teacher alone "
        f"(saved {result.saved_usd / without if without else 0:.0%}).\n"
        f"Routed: {result.routed_share:.1%} of all requests ({result.routed}/{result.requests}) were answered by "
        f"the student; {last_share:.1%} in the last window.\n"
        f"Agreement: {result.agreement:.1%} of the routed answers ({result.agreed}/{result.routed}) were the "
        f"student's own generated text, identical to the teacher's.\n"
    )
    return result
