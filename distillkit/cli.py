"""The ``distillkit`` command: status, train, export, calibrate, serve-student, demo.

Every command but ``demo`` and ``serve-student`` works on the store the environment points at (``DISTILLKIT_PATH``
or ``QDRANT_URL``, read with the same rules as the library, ``.env`` included).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from distillkit.config import ENV
from distillkit.errors import DistillkitError, StoreLockedError

__all__ = ["main"]


def _distiller(*, existing: bool = False, open_store: bool = False) -> Any:
    """The Distiller the environment describes.

    Args:
        existing: the command reads a store: say so if there is none (rather than create an
            empty folder wherever it runs).
        open_store: open it now, so that a locked store fails here, in one line.
    """
    from distillkit.config import DistillConfig
    from distillkit.distiller import Distiller

    config = DistillConfig.from_env()
    if existing and not config.qdrant_url and not Path(config.path).exists():
        raise NoStore(
            f"No store at {Path(config.path).resolve()}: nothing has been captured there.",
            fix=f"Run this where the application runs, or set {ENV.PATH} (or {ENV.QDRANT_URL}) to its store.",
        )
    distiller = Distiller(config)
    if open_store:
        # Open it now: a locked or broken store is the command's one-line error (printed by main),
        # not a traceback, nor the warning an application logs when it cannot open its store.
        library_logger = logging.getLogger("distillkit")
        level = library_logger.level
        library_logger.setLevel(logging.ERROR)
        try:
            distiller.store  # noqa: B018
        except BaseException:
            distiller.close()
            raise
        finally:
            library_logger.setLevel(level)
    return distiller


class NoStore(DistillkitError):
    """The command reads a store, and there is none where the configuration points."""


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    if args.round:
        return _show_round(args.round, args.json, out)
    distiller = _distiller(existing=True)
    try:
        report = distiller.status()
    except StoreLockedError:
        # An application holds the store: what every process published is readable all the same.
        print(
            "distillkit: the store is open in a running application; showing the counters its processes "
            "published (stored points and models appear once it is released).",
            file=sys.stderr,
        )
        report = {
            ns: {"stored": None, "indexed": None, "pending": None, "active_model": None, "job": None, **c.as_dict()}
            for ns, c in distiller.counters().items()
        }
    finally:
        distiller.close()
    training = _lora_in_flight(distiller.config)
    if args.json:
        if training:
            report = {**report, "_training": training}
        json.dump(report, out, indent=2, sort_keys=True, default=str)
        out.write("\n")
        return 0
    if not report:
        out.write(f"No data yet in {distiller.config.qdrant_url or distiller.config.path}.\n")
        return 0
    for job_id, line in training.items():
        out.write(f"training {job_id}: {line}\n")
    header = (
        f"{'namespace':<24}{'stored':>8}{'indexed':>9}{'pending':>9}{'routed':>8}{'saved $':>10}  active model / job"
    )
    out.write(header + "\n")
    for ns, row in report.items():
        job = row["job"]
        detail = row["active_model"] or "-"
        if row.get("probation"):
            detail += " (on probation: routes only where certified)"
        if job:
            detail += f"  (job {job.get('job_id')} {job.get('status')})"
        out.write(
            f"{ns:<24}{_shown(row['stored']):>8}{_shown(row['indexed']):>9}{_shown(row['pending']):>9}"
            f"{row['routed_share']:>8.0%}"
            f"{row['saved_usd']:>10.4f}  {detail}\n"
        )
        for model, shadow in sorted((row.get("shadow") or {}).items()):
            agreement = shadow.get("mean_agreement")
            shown = f"{agreement:.3f}" if isinstance(agreement, (int, float)) else "-"
            out.write(f"  shadow {model}: agreement {shown} over {shadow.get('samples', 0)} checks\n")
        demoted = row.get("demoted")
        if demoted:
            out.write(f"  demoted {demoted.get('model')}: {demoted.get('reason')}\n")
        for entry in row.get("rounds") or []:
            evaluation = entry.get("evaluation")
            line = f"  round {entry.get('job_id')}: {entry.get('status')} {entry.get('model') or ''}".rstrip()
            if evaluation:
                line += (
                    f"; held-out agreement {evaluation.get('agreement', 0):.3f} on {evaluation.get('n')}"
                    f" (floor {evaluation.get('floor')}): {evaluation.get('verdict')}"
                )
                fields = evaluation.get("fields") or {}
                if fields:
                    line += "; fields " + ", ".join(f"{p} {a}/{n}" for p, (a, n) in sorted(fields.items()))
            elif entry.get("error"):
                line += f": {entry.get('error')}"
            out.write(line + "\n")
        if row.get("cross_check_failures"):
            out.write(f"  cross-check: {row['cross_check_failures']} student answers unlike their neighbours' ")
            out.write("went to the teacher\n")
        if row.get("store_busy"):
            out.write(f"  store busy: {row['store_busy']} lookups waited out an index build and went to the teacher\n")
        budget = row.get("budget")
        if budget:
            shown = budget["threshold"] if budget["threshold"] is not None else "-"
            out.write(
                f"  error budget {budget['max_error']}: {budget['status']}, threshold {shown},"
                f" {budget['labels']} labels ({budget['reason']})\n"
            )
            for guard in budget.get("guards") or []:
                out.write(f"  guard: {guard}\n")
        if row.get("unsure"):
            out.write(
                f"  confidence: {row['unsure']} student answers below the certified confidence went to the teacher\n"
            )
    return 0


def _show_round(job_id: str, as_json: bool, out: TextIO) -> int:
    """``distillkit status --round JOB_ID``: the round's history record, its wrong answers in full."""
    distiller = _distiller(existing=True, open_store=True)
    try:
        found = [e for e in distiller.trainer.history() if str(e.get("job_id")) == job_id]
    finally:
        distiller.close()
    if not found:
        raise DistillkitError(
            f"No ended training round {job_id!r} in this store.", fix="`distillkit status` lists the rounds."
        )
    entry = found[-1]
    if as_json:
        json.dump(entry, out, indent=2, sort_keys=True, default=str)
        out.write("\n")
        return 0
    evaluation = entry.get("evaluation") or {}
    out.write(f"round {job_id} ({entry.get('namespace')}): {entry.get('outcome')}\n")
    if entry.get("error"):
        out.write(f"  {entry['error']}\n")
    if evaluation:
        out.write(
            f"  candidate {evaluation.get('model')}: {evaluation.get('agreed')}/{evaluation.get('n')} held-out answers "
            f"agree (floor {evaluation.get('floor')}, bounds {evaluation.get('bounds')}): {evaluation.get('verdict')}\n"
        )
        for path, (same, total) in sorted((evaluation.get("fields") or {}).items()):
            out.write(f"  field {path}: {same}/{total}\n")
        for wrong in evaluation.get("wrong") or []:
            out.write(f"\n  asked:     {wrong.get('query')}\n  candidate: {wrong.get('answer')}\n")
            out.write(f"  teacher:   {wrong.get('teacher')}\n")
            if wrong.get("fields"):
                out.write(f"  differs:   {', '.join(wrong['fields'])}\n")
    return 0


def _lora_in_flight(config: Any) -> dict[str, str]:
    """The LoRA jobs still in flight and their progress lines, read from their folders (which a
    running application does not lock, unlike its embedded store)."""
    if config.fine_tuning != "lora" or not Path(config.lora_dir).is_dir():
        return {}
    from distillkit.training.lora import LoRAFineTuningProvider

    return LoRAFineTuningProvider(config.lora_dir).in_flight()


def _shown(value: Any) -> str:
    return "-" if value is None else str(value)


def cmd_train(args: argparse.Namespace, out: TextIO) -> int:
    try:
        distiller = _distiller(existing=True, open_store=True)
    except StoreLockedError as exc:
        raise StoreLockedError(
            "A running application holds the embedded store, so it trains its own rounds "
            f"({ENV.TRAIN_EVERY}, or distiller.train_now(wait=True) in its code).",
            fix="`distillkit status` shows its jobs' progress meanwhile; run `distillkit train` once it has "
            f"stopped, or give both a Qdrant server ({ENV.QDRANT_URL}).",
        ) from exc
    try:
        rounds = distiller.train_now(args.namespace, wait=args.wait, timeout=args.timeout)
    finally:
        distiller.close()
    if not rounds:
        out.write("Nothing to train: no namespace has data waiting.\n")
    for r in rounds:
        line = f"{r.namespace}: {r.status}"
        if r.job_id:
            line += f" job {r.job_id}"
        if r.model:
            line += f" -> {r.model}"
        if r.examples:
            line += f" ({r.examples} examples, {r.dropped} dropped)"
        if r.reason:
            line += f": {r.reason}"
        out.write(line + "\n")
    return 1 if any(r.status in ("failed", "error") for r in rounds) else 0


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    distiller = _distiller(existing=True, open_store=True)
    tmp: str | None = None
    if args.output:
        # Written beside the target and renamed over it once complete: a failed export (a locked
        # store, a full disk) leaves an earlier export as it was.
        folder = os.path.dirname(os.path.abspath(args.output))
        fd, tmp = tempfile.mkstemp(prefix=".distillkit-export-", suffix=".tmp", dir=folder)
        target: TextIO = os.fdopen(fd, "w", encoding="utf-8")
    else:
        target = out
    count = 0
    try:
        for example in distiller.trainer.export(args.namespace):
            target.write(json.dumps(example, ensure_ascii=False) + "\n")
            count += 1
        if tmp is not None:
            target.close()
            os.replace(tmp, args.output)
            tmp = None
    finally:
        distiller.close()
        if target is not out:
            target.close()
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    if args.output:
        print(f"{count} examples written to {args.output}", file=sys.stderr)
    return 0


def cmd_calibrate(args: argparse.Namespace, out: TextIO) -> int:
    from distillkit.routing.calibrate import calibrate

    distiller = _distiller()
    saved: str | None = None
    try:
        result = calibrate(
            distiller.store,
            distiller.embedder,
            args.namespace,
            args.target_precision,
            min_support=args.min_support,
            labels=distiller.budget.labels(args.namespace) if distiller.budget is not None else (),
        )
        if args.save and result.threshold is not None:
            if distiller.registry.get(args.namespace) is None:
                saved = "not saved: the namespace has no active model yet (save once one is trained)"
            else:
                distiller.registry.set_threshold(args.namespace, result.threshold)
                saved = f"saved as the threshold of {args.namespace}"
        elif args.save:
            saved = "not saved: no threshold was chosen"
    finally:
        distiller.close()
    if args.json:
        json.dump({**result.as_dict(), "saved": saved}, out, indent=2, sort_keys=True)
        out.write("\n")
    else:
        if result.source == "labels":
            out.write(f"{args.namespace}: {result.pairs} measured labels of the student (shadow checks, exploration)\n")
        else:
            out.write(f"{args.namespace}: {result.points} points, {result.pairs} leave-one-out pairs\n")
        out.write(f"{'threshold':>9}{'precision':>11}{'coverage':>10}{'pairs':>7}\n")
        for c in result.curve:
            mark = "  <- chosen" if c.threshold == result.threshold else ""
            out.write(f"{c.threshold:>9.2f}{c.precision:>11.3f}{c.coverage:>10.3f}{c.pairs:>7}{mark}\n")
        chosen = f"{result.threshold:.2f}" if result.threshold is not None else "none"
        out.write(f"chosen threshold: {chosen} ({result.reason})\n")
        if saved:
            out.write(saved + "\n")
    if result.threshold is None:
        return 1
    return 1 if saved is not None and saved.startswith("not saved") else 0


def cmd_serve_student(args: argparse.Namespace, out: TextIO) -> int:
    from distillkit.config import DistillConfig
    from distillkit.student import StudentServer

    adapters = args.adapters or DistillConfig.from_env().lora_dir
    server = StudentServer(
        args.base,
        host=args.host,
        port=args.port,
        n_threads=args.threads,
        n_ctx=args.ctx,
        logprobs=args.logprobs,
        adapters=adapters if Path(adapters).is_dir() else None,
    )
    out.write(f"distillkit student: {server.model} on {server.base_url} (Ctrl-C stops it)\n")
    out.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from distillkit import demo

    if args.student == "simulated":
        demo.run(args.requests or 1200, args.round_every or 200, seed=args.seed, out=out, threshold=args.threshold)
        return 0
    missing = demo.local_missing()
    if missing is not None:
        out.write(f"{missing}\n(or run the seconds-long version: distillkit demo --student simulated)\n")
        return 1
    demo.run_real(args.requests or 360, args.round_every or 120, intents=args.intents, seed=args.seed, out=out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillkit", description="Distil what your OpenAI calls already know.")
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser("status", help="per namespace: data, active model, jobs, routed share, savings")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument(
        "--round",
        metavar="JOB_ID",
        help="one training round in full: its evaluation, per-field agreement and the candidate's wrong answers "
        "beside the teacher's (a rejected candidate too)",
    )
    status.set_defaults(run=cmd_status)

    train = commands.add_parser("train", help="run a training round now (poll jobs, start new ones)")
    train.add_argument("--namespace", "-n", help="only this namespace")
    train.add_argument("--wait", action="store_true", help="wait until the jobs end and their points are flipped")
    train.add_argument("--timeout", type=float, default=None, help="seconds to wait at most, with --wait")
    train.set_defaults(run=cmd_train)

    export = commands.add_parser("export", help="write the training data as JSONL")
    export.add_argument("--namespace", "-n", help="only this namespace")
    export.add_argument("-o", "--output", help="file to write (default: standard output)")
    export.set_defaults(run=cmd_export)

    calibrate = commands.add_parser("calibrate", help="choose a namespace's threshold from its own stored points")
    calibrate.add_argument("--namespace", "-n", required=True, help="the namespace to calibrate")
    calibrate.add_argument("--target-precision", type=float, default=0.95, help="precision to reach (default 0.95)")
    calibrate.add_argument("--min-support", type=int, default=20, help="pairs needed above the threshold (20)")
    calibrate.add_argument("--save", action="store_true", help="store it as the namespace's threshold")
    calibrate.add_argument("--json", action="store_true", help="print JSON")
    calibrate.set_defaults(run=cmd_calibrate)

    serve = commands.add_parser(
        "serve-student", help="serve the CPU student (llama.cpp) and its LoRA adapters, OpenAI-compatible"
    )
    serve.add_argument(
        "--base",
        default="smollm2-135m",
        help="a packaged model: smollm2-135m (default) or gemma3-270m (distillkit[gemma]); or a .gguf file",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8011, help="port (default 8011)")
    serve.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's)")
    serve.add_argument("--ctx", type=int, default=1024, help="context length in tokens (default 1024)")
    serve.add_argument(
        "--adapters",
        default=None,
        help="LoRA folder whose newest trained adapters are loaded at start (default: DISTILLKIT_LORA_DIR, "
        "else ./.distillkit-lora, when it exists)",
    )
    serve.add_argument(
        "--logprobs", action="store_true", help="no effect (every request may ask for logprobs); kept for old scripts"
    )
    serve.set_defaults(run=cmd_serve_student)

    demo = commands.add_parser("demo", help="run the whole loop offline: the simulator teaches, SmolLM2 learns")
    demo.add_argument(
        "--student",
        choices=("real", "simulated"),
        default="real",
        help="real: SmolLM2 trained with LoRA on this CPU (distillkit[local], minutes); "
        "simulated: the simulator's fine-tuning API (seconds)",
    )
    demo.add_argument("--requests", type=int, default=None, help="default: 360 real, 1200 simulated")
    demo.add_argument("--round-every", type=int, default=None, help="default: 120 real, 200 simulated")
    demo.add_argument("--intents", type=int, default=10, help="real student: how many intents (default 10)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--threshold", type=float, default=None)
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``distillkit`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args, out or sys.stdout))
    except DistillkitError as exc:
        print(f"distillkit: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
