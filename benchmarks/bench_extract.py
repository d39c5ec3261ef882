"""JSON extraction with the real student: how much on-task traffic it answers, how exactly, and how
often off-task requests of the same namespace reach it.

The traffic is :mod:`distillkit.testing.extraction`: seeded customer messages (refunds, double
charges, missing deliveries ... in many templates, with names, amounts, currencies, dates and
order ids written in many forms, some absent) under one short system prompt and
``response_format={"type": "json_object"}``; the teacher (the simulator) answers the exact JSON
object (ISO codes and dates, ``null`` for what is absent). A share of test requests is off-task (the
weather, a joke) with the same system prompt; the teacher answers them a fixed refusal. The
student is SmolLM2-135M-Instruct, trained with LoRA on this machine's CPU and served by the local
student server on llama.cpp (``distillkit[local]``), as in ``benchmarks/bench_stream.py``; the
library's defaults decide routing, the promotion gate and the error budget.

1. **Stream.** Training messages (split ``train``) go through a wrapped client in namespace
   ``extract``; a training round (``train_now(wait=True)``) runs every ``--round-every`` requests
   and at the end, with the library's LoRA settings for the packaged student (examples kept whole:
   with the chat template a prompt is up to 125 tokens and an answer up to 68).
2. **Test.** Test messages (split ``test``: no text shared with training) go through the trained
   system with capture off.

Reported: the routed share of on-task test messages; of the routed ones, exact agreement (the
parsed JSON equals the teacher's) and field agreement (the share of the six fields with equal
values), each with its one-sided 95% Clopper-Pearson lower bound (the field bound counts fields
as independent trials, which they are not: it is optimistic); false routes, the share of
off-task test requests routed.

3. **Frontier.** Every test message is also asked of the student directly, and the routed share,
   exact agreement and false routes are printed at each similarity threshold of the nearest
   trained neighbour; with ``--logprobs`` also with a floor on the student's lowest token
   log-probability. ``--dump FILE`` writes each message's signals as JSON.

    python benchmarks/bench_extract.py             # 400 training, 200 test messages
    python benchmarks/bench_extract.py --quick     # 120 training, 60 test, one round (aimed at 10 minutes)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _student import add_base_model, latency, training_cost

import distillkit
from distillkit import demo
from distillkit.config import DistillConfig
from distillkit.distiller import Distiller
from distillkit.routing.acceptance import upper_bound
from distillkit.testing.extraction import FIELDS, Extraction, fields_matching, messages, same_json

TEACHER = "gpt-4.1"
NAMESPACE = "extract"
RESPONSE_FORMAT: Any = {"type": "json_object"}
#: Generation cap: the longest teacher answer is 68 tokens; EOS ends earlier.
MAX_TOKENS = 96
#: Similarity thresholds of the frontier table.
FRONTIER_AT = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.0)
#: Floors on the lowest token log-probability (with ``--logprobs``).
LOGPROB_AT = (-0.1, -0.2, -0.3, -0.5, -1.0)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="120 training, 60 test messages, one round")
    parser.add_argument("--train", type=int, default=None, help="training messages streamed (400; --quick 120)")
    parser.add_argument("--test", type=int, default=None, help="test messages (200; --quick 60)")
    parser.add_argument("--round-every", type=int, default=None, help="requests between rounds (200; --quick 120)")
    parser.add_argument("--epochs", type=int, default=None, help="LoRA epochs per round (3)")
    parser.add_argument("--off-task", type=float, default=0.1, help="share of off-task test requests (0.1)")
    parser.add_argument(
        "--train-off-task",
        type=float,
        default=0.0,
        help="share of off-task requests in the training stream (0: off-task traffic is never seen, like "
        "bench_stream's never-streamed intents; with some, the student learns to refuse them, and routes them rightly)",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_base_model(parser)
    parser.add_argument("--logprobs", action="store_true", help="frontier with the student's token log-probabilities")
    parser.add_argument("--dump", help="write every test message's signals as JSON to this file")
    args = parser.parse_args()
    quick = {"train": 120, "test": 60, "round_every": 120, "epochs": 3}
    full = {"train": 400, "test": 200, "round_every": 200, "epochs": 3}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.train < 1 or args.test < 1 or args.round_every < 1:
        parser.error("--train, --test and --round-every must be at least 1")
    return args


#: Why test requests went where they went (route_info's reason), printed after the test phase.
REASONS: Counter[str] = Counter()


def ask(client: Any, record: Extraction, **options: Any) -> tuple[bool, str]:
    response = client.chat.completions.create(
        model=TEACHER,
        messages=record.chat,
        response_format=RESPONSE_FORMAT,
        max_tokens=MAX_TOKENS,
        temperature=0,
        **({"distillkit": options} if options else {}),
    )
    info = distillkit.route_info(response)
    if not options.get("capture", True):
        REASONS[info.reason if info is not None else "not seen"] += 1
    return bool(info is not None and info.routed), (response.choices[0].message.content or "").strip()


def lower_bound(right: int, n: int) -> float:
    """One-sided 95% Clopper-Pearson lower bound of a share seen as ``right`` out of ``n``."""
    return 1.0 - upper_bound(n - right, n)


def frontier(
    distiller: Distiller,
    base_url: str,
    tests: list[Extraction],
    *,
    candidate: str | None = None,
    logprobs: bool = False,
    dump: str | None = None,
) -> list[str]:
    """Exact agreement against routed share per signal, over every test message (whatever the router decided).

    Each message is embedded with the library's embedder, its nearest trained point read from the
    store, and the active student answers it directly (the router is not asked). With no active
    student, the last round's ``candidate`` (rejected by the gate, still served) answers, and the
    nearest point is any captured one (nothing was marked trained).
    """
    from openai import OpenAI

    active = distiller.registry.get(NAMESPACE)
    model, indexed, whose = (active.model, True, "the active student") if active else (candidate, None, "")
    if model is None:
        return ["frontier: no student (no round trained one)"]
    if active is None:
        whose = f"no active student: the last round's rejected candidate {model}, nearest of every captured point"
    student = OpenAI(base_url=base_url, api_key="local", max_retries=0)
    rows: list[dict[str, Any]] = []
    seconds: list[float] = []
    lengths: list[int] = []
    for record in tests:
        vector = distiller.embedder.embed([record.text])[0]
        hits = distiller.store.search(vector, namespace=NAMESPACE, indexed=indexed, limit=1)
        request: dict[str, Any] = {"model": model, "messages": record.chat, "logprobs": logprobs}
        asked = time.perf_counter()
        reply = student.chat.completions.create(
            **request, response_format=RESPONSE_FORMAT, max_tokens=MAX_TOKENS, temperature=0
        )
        seconds.append(time.perf_counter() - asked)
        lengths.append(reply.usage.completion_tokens if reply.usage else 0)
        choice = reply.choices[0]
        answer = (choice.message.content or "").strip()
        tokens = [t.logprob for t in (choice.logprobs.content or [])] if logprobs and choice.logprobs else []
        rows.append(
            {
                "text": record.text,
                "off_task": record.off_task,
                "similarity": float(hits[0].score) if hits else 0.0,
                "exact": same_json(answer, record.answer),
                "fields": fields_matching(answer, record.answer),
                "min_logprob": min(tokens) if tokens else None,
                "answer": answer,
            }
        )
    if dump:
        Path(dump).write_text(json.dumps(rows))
    on = [r for r in rows if not r["off_task"]]
    n_on, n_off = len(on) or 1, (len(rows) - len(on)) or 1

    def line(name: str, accept: Any) -> str:
        cells = []
        for at in FRONTIER_AT:
            chosen = [r for r in rows if r["similarity"] >= at and accept(r)]
            known = [r for r in chosen if not r["off_task"]]
            agree = sum(r["exact"] for r in known) / len(known) if known else 0.0
            cells.append(f">={at:g}: {len(known) / n_on:.3f}/{agree:.3f}/{(len(chosen) - len(known)) / n_off:.3f}")
        return f"  {name:28} " + "  ".join(cells)

    lines = [
        f"frontier over all test messages ({whose}), by the nearest trained neighbour's similarity (routed share "
        "and exact agreement on on-task messages / share of off-task messages routed):",
        line("similarity only", lambda r: True),
    ]
    if logprobs:
        for cut in LOGPROB_AT:
            lines.append(
                line(
                    f"+ min logprob >= {cut:g}",
                    lambda r, cut=cut: r["min_logprob"] is not None and r["min_logprob"] >= cut,
                )
            )
    exact = sum(r["exact"] for r in on)
    fields = sum(r["fields"] for r in on)
    lines.append(
        f"  the student alone, on-task test messages: exact {exact / n_on:.3f} ({exact}/{len(on)}), fields "
        f"{fields / (n_on * len(FIELDS)):.3f}; off-task answered the refusal "
        f"{sum(r['exact'] for r in rows if r['off_task'])}/{len(rows) - len(on)}"
    )
    wrong = Counter(
        name
        for r, record in zip(rows, tests, strict=True)
        if not r["off_task"]
        for name in _wrong_fields(r["answer"], record.answer)
    )
    lines.append("  fields the student got wrong: " + (", ".join(f"{k} {n}" for k, n in wrong.most_common()) or "none"))
    lines.append(latency(seconds, lengths))
    return lines


def _job_model(provider: Any, job_id: str | None) -> str | None:
    """The model a finished job made, rejected by the gate or not (a round names only an activated one)."""
    if job_id is None:
        return None
    try:
        return provider.poll(job_id).model
    except Exception:  # the frontier then says there is no student
        return None


def _wrong_fields(answer: str, expected: Any) -> list[str]:
    return [name for name in FIELDS if fields_matching(answer, {name: expected[name]}) == 0]


def main() -> None:
    args = parse()
    missing = demo.local_missing()
    if missing is not None:
        raise SystemExit(missing)
    from distillkit.testing import Simulator
    from distillkit.testing.extraction import teacher

    stream = messages(args.seed, args.train, off_task=args.train_off_task)
    tests = messages(args.seed, args.test, split="test", off_task=args.off_task)
    command = "python benchmarks/bench_extract.py " + shlex.join(sys.argv[1:])
    print(f"command: {command}")
    print(
        f"extraction traffic (distillkit.testing.extraction, seed {args.seed}): {len(stream)} training messages, "
        f"{len(tests)} test messages, {args.off_task:.0%} of the test and {args.train_off_task:.0%} of the training "
        "messages off-task; response_format json_object"
    )
    settings = demo.local_settings(args.epochs, args.base_model)
    print(
        f"student: {args.base_model} + LoRA (at most {args.epochs} epoch(s) per round, incremental, "
        f"examples up to {settings.max_length} tokens), served by the local student server; a round every "
        f"{args.round_every} requests and at the end; answers capped at {MAX_TOKENS} tokens; library defaults "
        "for routing, the gate and the budget"
    )
    sys.stdout.flush()

    walls: dict[str, float] = {}
    t0 = time.perf_counter()
    with (
        Simulator(answer=teacher(stream + tests)) as sim,
        tempfile.TemporaryDirectory() as folder,
        demo.local_student(folder, settings, base_model=args.base_model, logprobs=args.logprobs) as (provider, url),
    ):
        config = DistillConfig(
            path=str(Path(folder) / "store"),
            namespace=NAMESPACE,
            min_examples=20,
            base_model=args.base_model,
            distilled_base_url=url,
        )
        distiller = Distiller(config, fine_tuning_provider=provider)
        client = distillkit.wrap(sim.client(), distiller)
        walls["setup (student server, store)"] = time.perf_counter() - t0
        answering = training = 0.0
        s_routed = s_agreed = rounds_run = 0
        candidate: str | None = None
        try:
            for i, record in enumerate(stream):
                t = time.perf_counter()
                routed, answer = ask(client, record)
                answering += time.perf_counter() - t
                s_routed += routed
                s_agreed += routed and same_json(answer, record.answer)
                if (i + 1) % 50 == 0:
                    print(f"  stream {i + 1}/{len(stream)}: {s_routed} routed so far", file=sys.stderr, flush=True)
                if (i + 1) % args.round_every and i + 1 != len(stream):
                    continue
                rounds_run += 1
                label = f"round {rounds_run} (after {i + 1} requests)"
                started = time.perf_counter()
                rounds = distiller.train_now(wait=True, timeout=3600, progress=sys.stderr)
                took = time.perf_counter() - started
                training += took
                for r in rounds:
                    candidate = r.model or _job_model(provider, r.job_id) or candidate
                    evaluation = r.evaluation or {}
                    held_out = evaluation.get("agreement")
                    print(
                        f"{label}: {r.status}, {r.examples} examples, {r.held_out} held out"
                        + (
                            f", held-out agreement {held_out:.3f} on {evaluation.get('n')} {evaluation.get('scope')}"
                            if held_out is not None
                            else ""
                        )
                        + (f" ({r.reason})" if r.reason and r.status != "succeeded" else "")
                        + f", {took:.0f} s"
                        + training_cost(provider, r.job_id),
                        flush=True,
                    )
                    if r.status == "error":  # the figures would measure a broken setup, not the student
                        raise SystemExit(f"bench_extract: a training round failed: {r.reason}")
            walls["stream: answering"] = answering
            walls["stream: training rounds"] = training

            t = time.perf_counter()
            on = {"n": 0, "routed": 0, "exact": 0, "fields": 0}
            off = {"n": 0, "routed": 0, "refused": 0}
            for record in tests:
                routed, answer = ask(client, record, capture=False)
                if record.off_task:
                    off["n"] += 1
                    off["routed"] += routed
                    off["refused"] += routed and same_json(answer, record.answer)
                else:
                    on["n"] += 1
                    on["routed"] += routed
                    on["exact"] += routed and same_json(answer, record.answer)
                    on["fields"] += fields_matching(answer, record.answer) if routed else 0
            walls["test"] = time.perf_counter() - t
            t = time.perf_counter()
            frontier_lines = frontier(
                distiller, url, tests, candidate=candidate, logprobs=args.logprobs, dump=args.dump
            )
            walls["frontier (every test message asked of the student)"] = time.perf_counter() - t
        finally:
            distillkit.unwrap(client)
            distiller.close()
    walls["total"] = time.perf_counter() - t0

    routed_share = on["routed"] / on["n"] if on["n"] else 0.0
    agreement = on["exact"] / on["routed"] if on["routed"] else 0.0
    n_fields = on["routed"] * len(FIELDS)
    field_agreement = on["fields"] / n_fields if n_fields else 0.0
    false_routes = off["routed"] / off["n"] if off["n"] else 0.0
    print()
    print(
        f"stream ({len(stream)} requests, as they arrived): routed {s_routed / len(stream):.3f}, exact agreement "
        f"{s_agreed / s_routed if s_routed else 0:.3f} ({s_agreed}/{s_routed})"
    )
    print(
        f"test, on-task ({on['n']} messages): routed {routed_share:.3f} ({on['routed']}/{on['n']}); exact agreement "
        f"{agreement:.3f} ({on['exact']}/{on['routed']}, "
        f"95% lower bound {lower_bound(on['exact'], on['routed']):.3f}); "
        f"field agreement {field_agreement:.3f} ({on['fields']}/{n_fields}, 95% lower bound "
        f"{lower_bound(on['fields'], n_fields):.3f})"
    )
    print(
        f"test, off-task ({off['n']} messages): routed {false_routes:.3f} ({off['routed']}/{off['n']}), of which "
        f"answered the refusal {off['refused']}/{off['routed']}"
    )
    print("\n".join(frontier_lines))
    print("why test requests went where they did: " + ", ".join(f"{r} {n}" for r, n in REASONS.most_common()))
    print("wall time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in walls.items()))
    print(f"command: {command}")
    print(
        f"extract: routed={routed_share:.3f} agreement={agreement:.3f} field_agreement={field_agreement:.3f} "
        f"false_routes={false_routes:.3f}"
    )


if __name__ == "__main__":
    main()
