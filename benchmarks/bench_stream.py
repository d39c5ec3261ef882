"""The product's number: how much BANKING77 traffic a real student answers, and how often as the teacher would.

BANKING77 (``../shared/data/banking77``, all 77 intents by default). The teacher is the
simulator with one fixed short answer per intent (:func:`distillkit.demo.short_answer`). The
student is SmolLM2-135M-Instruct, trained with LoRA on this machine's CPU and served by the local
student server on llama.cpp (``distillkit[local]``). Everything goes through the library's own
code with its default routing, promotion gate and error budget: a wrapped OpenAI client, a
:class:`~distillkit.Distiller`, and a training round (``train_now(wait=True)``) every
``--round-every`` requests and once at the end of the stream.

1. **Stream.** Training queries arrive as traffic in a seeded random order; intents join over the
   first two thirds of the stream (each intent's queries are spread from its arrival to the end).
   ``--unseen`` intents are held out of the stream entirely.
2. **Test.** Test queries of the streamed intents and of the unseen ones go through the trained
   system with capture off (``distillkit={"capture": False}``); no round runs after them.

Reported: the share of test traffic answered by the student (routed), the share of routed answers
identical to the teacher's (agreement: the student's own generated text against the intent's fixed
answer), end-to-end accuracy (routed and identical, plus everything the teacher answered), the
false-route rate on intents the stream never showed, the cost saved, and each phase's wall time.
The headline figures are over test queries of streamed intents (as TRACER's are over known
traffic); the unseen intents are reported separately and in the all-traffic accuracy.

3. **Frontier.** Every test query is then also asked of the student directly, and the routed share,
   agreement and false-route rate are printed per signal at each similarity threshold (the
   nearest neighbour's similarity, the 5 nearest agreeing, the cross-check, and with
   ``--logprobs`` the student's lowest token log-probability). ``--dump FILE`` writes each query's
   signals; ``benchmarks/stream_frontier.py FILE`` sweeps every rule and a learned acceptor on them.

Subsampling, to fit about 45 minutes on 2 idle cores: ``--train-per-intent`` training queries and
``--test-per-intent`` test queries per intent (seeded), incremental rounds (each round
continues the active adapter on the new captures), two epochs per round, answers capped at ``MAX_TOKENS`` tokens.

    python benchmarks/bench_stream.py             # all 77 intents (45 min on 2 idle cores)
    python benchmarks/bench_stream.py --quick     # 10 intents, a few minutes

Reference: TRACER (2026) handles 92.2% of BANKING77 traffic at 96.1% agreement with the teacher,
with a classifier (not a generative student).
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from _data import banking77
from _student import add_base_model, latency, training_cost

import distillkit
from distillkit import demo
from distillkit.config import DistillConfig
from distillkit.distiller import Distiller
from distillkit.routing.acceptance import upper_bound

TEACHER = "gpt-4.1"
NAMESPACE = "banking"
TRACER = "TRACER (2026), same dataset: routed 0.922 at agreement 0.961 (a classifier, not a generative student)"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 intents, small samples: a few minutes")
    parser.add_argument("--intents", type=int, default=None, help="intents used (default 77; --quick 10)")
    parser.add_argument("--unseen", type=int, default=None, help="intents never streamed (7; --quick 2)")
    parser.add_argument("--train-per-intent", type=int, default=None, help="stream queries per intent (40; --quick 24)")
    parser.add_argument("--test-per-intent", type=int, default=None, help="test queries per intent (10; --quick 4)")
    parser.add_argument("--round-every", type=int, default=None, help="requests between rounds (700; --quick 96)")
    parser.add_argument("--epochs", type=int, default=None, help="LoRA epochs per round (2; --quick 3)")
    parser.add_argument("--seed", type=int, default=0)
    add_base_model(parser)
    parser.add_argument("--logprobs", action="store_true", help="frontier with the student's token log-probabilities")
    parser.add_argument("--dump", help="write every test query's signals as JSON to this file")
    args = parser.parse_args()
    quick = {"intents": 10, "unseen": 2, "train_per_intent": 24, "test_per_intent": 4, "round_every": 96, "epochs": 3}
    full = {"intents": 77, "unseen": 7, "train_per_intent": 40, "test_per_intent": 10, "round_every": 700, "epochs": 2}
    defaults = quick if args.quick else full
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not 1 <= args.unseen < args.intents <= 77:
        parser.error("need 1 <= --unseen < --intents <= 77")
    return args


def sample(args: argparse.Namespace) -> tuple[list[tuple[str, str]], dict[str, list[str]], list[str], list[str]]:
    """The stream (text, intent) in arrival order, test queries by intent, streamed and unseen intents."""
    rng = random.Random(args.seed)
    train: defaultdict[str, list[str]] = defaultdict(list)
    for text, intent in banking77("train"):
        train[intent].append(text)
    test: defaultdict[str, list[str]] = defaultdict(list)
    for text, intent in banking77("test"):
        test[intent].append(text)
    intents = sorted(train)
    rng.shuffle(intents)
    intents = intents[: args.intents]
    streamed, unseen = intents[args.unseen :], intents[: args.unseen]
    timed: list[tuple[float, str, str]] = []
    for k, intent in enumerate(streamed):
        arrival = k / len(streamed) * 2 / 3  # intents join over the first two thirds of the stream
        for text in rng.sample(train[intent], min(args.train_per_intent, len(train[intent]))):
            timed.append((rng.uniform(arrival, 1.0), text, intent))
    timed.sort()
    tests = {i: rng.sample(test[i], min(args.test_per_intent, len(test[i]))) for i in intents}
    return [(text, intent) for _, text, intent in timed], tests, streamed, unseen


#: Why test queries went where they went (route_info's reason), printed after the test phase.
REASONS: Counter[str] = Counter()


def ask(client: Any, text: str, **options: Any) -> tuple[bool, str]:
    response = client.chat.completions.create(
        model=TEACHER,
        messages=[{"role": "system", "content": demo.REAL_SYSTEM}, {"role": "user", "content": text}],
        max_tokens=demo.MAX_TOKENS,
        temperature=0,
        **({"distillkit": options} if options else {}),
    )
    info = distillkit.route_info(response)
    if not options.get("capture", True):
        REASONS[info.reason if info is not None else "not seen"] += 1
    return bool(info is not None and info.routed), (response.choices[0].message.content or "").strip()


#: Similarity thresholds of the frontier table.
FRONTIER_AT = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.0)
#: Minimum token log-probabilities of the frontier table (with ``--logprobs``).
LOGPROB_AT = (-0.01, -0.1, -0.5)


def frontier(
    distiller: Distiller,
    base_url: str,
    tests: dict[str, list[str]],
    streamed: list[str],
    unseen: list[str],
    *,
    logprobs: bool = False,
    dump: str | None = None,
) -> list[str]:
    """Agreement against routed share per signal, over every test query (whatever the router decided).

    Each test query is embedded with the library's embedder, its 5 nearest trained points are read
    from the store, and the active student answers it directly (the router is not asked). Signals:
    the nearest trained neighbour's similarity alone; with the cross-check (the student's own
    answer equals the nearest neighbour's teacher answer, or is one of the 5 nearest's answers);
    with ``logprobs``, also the lowest token log-probability of the student's answer. ``dump``
    writes every query's signals as JSON, for other combinations.
    """
    import json

    from openai import OpenAI

    from distillkit.routing.budget import answer_key
    from distillkit.routing.novelty import Novelty

    active = distiller.registry.get(NAMESPACE)
    if active is None:
        return ["frontier: no active student"]
    acceptance = distiller.budget.acceptance(NAMESPACE) if distiller.budget is not None else None
    novelty = Novelty(**acceptance.novelty) if acceptance is not None and acceptance.novelty else None
    student = OpenAI(base_url=base_url, api_key="local", max_retries=0)
    rows: list[dict[str, Any]] = []
    seconds: list[float] = []
    lengths: list[int] = []
    for intent in streamed + unseen:
        for text in tests[intent]:
            messages = [{"role": "system", "content": demo.REAL_SYSTEM}, {"role": "user", "content": text}]
            vector = distiller.embedder.embed([text])[0]
            near = distiller.store.search(vector, namespace=NAMESPACE, indexed=True, limit=10, fields=("response",))
            hits = near[:5]
            asked = time.perf_counter()
            reply = student.chat.completions.create(
                model=active.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=demo.MAX_TOKENS,
                temperature=0,
                logprobs=logprobs,
            )
            seconds.append(time.perf_counter() - asked)
            lengths.append(reply.usage.completion_tokens if reply.usage else 0)
            choice = reply.choices[0]
            answer = (choice.message.content or "").strip()
            mine = answer_key({"response": {"content": answer}})
            keys = [answer_key(hit.payload) for hit in hits]
            tokens = [t.logprob for t in (choice.logprobs.content or [])] if logprobs and choice.logprobs else []
            rows.append(
                {
                    "known": intent in streamed,
                    "similarity": float(hits[0].score) if hits else 0.0,
                    "correct": answer == demo.short_answer(intent),
                    "nearest": bool(keys) and mine == keys[0],
                    "top5": mine in keys,
                    "agreeing": sum(k == keys[0] for k in keys) if keys else 0,
                    "min_logprob": min(tokens) if tokens else None,
                    "far": novelty is not None and novelty.far([h.score for h in near]),
                }
            )
    if dump:
        Path(dump).write_text(json.dumps(rows))
    n_known = sum(r["known"] for r in rows) or 1
    n_new = sum(not r["known"] for r in rows) or 1

    def line(name: str, accept: Any) -> str:
        cells = []
        for at in FRONTIER_AT:
            chosen = [r for r in rows if r["similarity"] >= at and accept(r)]
            known = [r for r in chosen if r["known"]]
            agree = sum(r["correct"] for r in known) / len(known) if known else 0.0
            cells.append(f">={at:g}: {len(known) / n_known:.3f}/{agree:.3f}/{(len(chosen) - len(known)) / n_new:.3f}")
        return f"  {name:40} " + "  ".join(cells)

    lines = [
        "frontier over all test queries, by the nearest trained neighbour's similarity (routed share and "
        "agreement on streamed intents / false-route rate on intents never streamed):",
        line("similarity only", lambda r: True),
        line("+ 5 nearest agree", lambda r: r["agreeing"] == 5),
        line("+ cross-check: answer = nearest's", lambda r: r["nearest"]),
        line("+ cross-check: answer in 5 nearest's", lambda r: r["top5"]),
        line("+ nearest's, not out of distribution", lambda r: r["nearest"] and not r["far"]),
    ]
    if logprobs:
        for cut in LOGPROB_AT:
            lines.append(
                line(
                    f"+ nearest's, not far, min logprob >= {cut:g}",
                    lambda r, cut=cut: (
                        r["nearest"] and not r["far"] and r["min_logprob"] is not None and r["min_logprob"] >= cut
                    ),
                )
            )
    right = sum(r["correct"] for r in rows if r["known"]) / n_known
    lines.append(f"  the student alone answers {right:.3f} of streamed intents' test queries as the teacher")
    lines.append(latency(seconds, lengths))
    if acceptance is not None:
        lines.append(
            f"  the fitted acceptance: {acceptance.status} on {acceptance.labels} labels, signal {acceptance.signal}, "
            f"similarity >= {acceptance.threshold}, confidence >= {acceptance.min_confidence} ({acceptance.reason})"
        )
    return lines


def saved_share(stats: Any, before: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float, float]:
    cost, saved = stats.cost_usd - before[0], stats.saved_usd - before[1]
    return cost, saved, saved / (cost + saved) if cost + saved else 0.0


def main() -> None:
    args = parse()
    missing = demo.local_missing()
    if missing is not None:
        raise SystemExit(missing)
    from distillkit.testing import Reply, Simulator

    stream, tests, streamed, unseen = sample(args)
    intent_of = {text: intent for text, intent in stream}
    for intent, texts in tests.items():
        intent_of.update(dict.fromkeys(texts, intent))
    command = "python benchmarks/bench_stream.py " + shlex.join(sys.argv[1:])
    print(f"command: {command}")
    print(
        f"BANKING77: {len(streamed)} intents streamed ({len(stream)} training queries, at most "
        f"{args.train_per_intent} per intent, seed {args.seed}), {len(unseen)} intents never streamed; "
        f"test: at most {args.test_per_intent} queries per intent"
    )
    print(
        f"student: {args.base_model} + LoRA ({args.epochs} epoch(s) per round, incremental), served by the "
        f"local student server; a round every {args.round_every} requests and at the end; answers capped at "
        f"{demo.MAX_TOKENS} tokens; library defaults for routing, the promotion gate and the error budget"
    )
    sys.stdout.flush()

    def teacher(request: dict[str, Any]) -> Reply:
        return Reply(content=demo.short_answer(intent_of.get(request["messages"][-1]["content"], "other")))

    settings = demo.local_settings(args.epochs, args.base_model)
    walls: dict[str, float] = {}
    rounds_out: list[str] = []
    t0 = time.perf_counter()
    with (
        Simulator(answer=teacher) as sim,
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
        s_routed = s_agreed = 0
        try:
            for i, (text, intent) in enumerate(stream):
                t = time.perf_counter()
                routed, answer = ask(client, text)
                answering += time.perf_counter() - t
                s_routed += routed
                s_agreed += routed and answer == demo.short_answer(intent)
                if (i + 1) % 50 == 0:
                    print(f"  stream {i + 1}/{len(stream)}: {s_routed} routed so far", file=sys.stderr, flush=True)
                if (i + 1) % args.round_every and i + 1 != len(stream):
                    continue
                label = f"round {len(rounds_out) + 1} (after {i + 1} requests)"
                started = time.perf_counter()
                rounds = distiller.train_now(wait=True, timeout=3600, progress=sys.stderr)
                took = time.perf_counter() - started
                training += took
                for r in rounds:
                    evaluation = r.evaluation or {}
                    agreement = evaluation.get("agreement")
                    line = (
                        f"{label}: {r.status}, {r.examples} examples, {r.held_out} held out"
                        + (
                            f", held-out agreement {agreement:.3f} on {evaluation.get('n')} "
                            f"{evaluation.get('scope')} (all held out: {evaluation.get('agreed_all')}/"
                            f"{evaluation.get('held_out')})"
                            if agreement is not None
                            else ""
                        )
                        + (f" ({r.reason})" if r.reason and r.status not in ("succeeded",) else "")
                        + f", {took:.0f} s"
                        + training_cost(provider, r.job_id)
                    )
                    rounds_out.append(line)
                    print(line, flush=True)
                    if r.status == "error":  # the figures would measure a broken setup, not the student
                        raise SystemExit(f"bench_stream: a training round failed: {r.reason}")
            walls["stream: answering"] = answering
            walls["stream: training rounds"] = training
            stream_stats = distiller.stats(NAMESPACE)[NAMESPACE]
            before = (stream_stats.cost_usd, stream_stats.saved_usd)
            stream_saving = saved_share(stream_stats)

            t = time.perf_counter()
            seen = {"n": 0, "routed": 0, "agreed": 0}
            new = {"n": 0, "routed": 0}
            for intent in streamed + unseen:
                for text in tests[intent]:
                    routed, answer = ask(client, text, capture=False)
                    if intent in unseen:
                        new["n"] += 1
                        new["routed"] += routed
                    else:
                        seen["n"] += 1
                        seen["routed"] += routed
                        seen["agreed"] += routed and answer == demo.short_answer(intent)
            walls["test"] = time.perf_counter() - t
            test_saving = saved_share(distiller.stats(NAMESPACE)[NAMESPACE], before)
            t = time.perf_counter()
            frontier_lines = frontier(distiller, url, tests, streamed, unseen, logprobs=args.logprobs, dump=args.dump)
            walls["frontier (every test query asked of the student)"] = time.perf_counter() - t
        finally:
            distillkit.unwrap(client)
            distiller.close()
    walls["total"] = time.perf_counter() - t0

    routed = seen["routed"] / seen["n"] if seen["n"] else 0.0
    agreement = seen["agreed"] / seen["routed"] if seen["routed"] else 0.0
    accuracy = (seen["agreed"] + seen["n"] - seen["routed"]) / seen["n"] if seen["n"] else 0.0
    false_route = new["routed"] / new["n"] if new["n"] else 0.0
    everything = seen["n"] + new["n"]
    accuracy_all = (seen["agreed"] + seen["n"] - seen["routed"] + new["n"] - new["routed"]) / everything
    print()
    print(
        f"stream ({len(stream)} requests, as they arrived): routed {s_routed / len(stream):.3f}, agreement "
        f"{s_agreed / s_routed if s_routed else 0:.3f} ({s_agreed}/{s_routed}); cost saved "
        f"{stream_saving[2]:.1%} (${stream_saving[1]:.4f} of ${stream_saving[0] + stream_saving[1]:.4f})"
    )
    lower = 1.0 - upper_bound(seen["routed"] - seen["agreed"], seen["routed"]) if seen["routed"] else 0.0
    print(
        f"test, streamed intents ({seen['n']} queries): routed {routed:.3f}, agreement {agreement:.3f} "
        f"({seen['agreed']}/{seen['routed']}; 95% lower bound {lower:.3f}), end-to-end accuracy {accuracy:.3f}"
    )
    print(
        f"test, intents never streamed ({new['n']} queries of {len(unseen)} intents): false-route rate "
        f"{false_route:.3f} ({new['routed']}/{new['n']})"
    )
    print(f"test, all traffic ({everything} queries): end-to-end accuracy {accuracy_all:.3f}")
    print(f"test cost saved: {test_saving[2]:.1%} (${test_saving[1]:.4f} of ${test_saving[0] + test_saving[1]:.4f})")
    print("\n".join(frontier_lines))
    print("why test queries went where they did: " + ", ".join(f"{r} {n}" for r, n in REASONS.most_common()))
    print(f"reference: {TRACER}")
    print("wall time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in walls.items()))
    print(f"command: {command}")
    print(f"stream: routed={routed:.3f} agreement={agreement:.3f} accuracy={accuracy:.3f}")


if __name__ == "__main__":
    main()
