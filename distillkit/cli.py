"""The ``distillkit`` command: status, train, export, demo.

Every command but ``demo`` works on the store the environment points at (``DISTILLKIT_PATH``
or ``QDRANT_URL``, read with the same rules as the library, ``.env`` included).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from distillkit.errors import DistillkitError

__all__ = ["main"]


def _distiller() -> Any:
    from distillkit.distiller import Distiller

    return Distiller.from_env()


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    distiller = _distiller()
    try:
        report = distiller.status()
    finally:
        distiller.close()
    if args.json:
        json.dump(report, out, indent=2, sort_keys=True, default=str)
        out.write("\n")
        return 0
    if not report:
        out.write(f"No data yet in {distiller.config.qdrant_url or distiller.config.path}.\n")
        return 0
    header = (
        f"{'namespace':<24}{'stored':>8}{'indexed':>9}{'pending':>9}{'routed':>8}{'saved $':>10}  active model / job"
    )
    out.write(header + "\n")
    for ns, row in report.items():
        job = row["job"]
        detail = row["active_model"] or "-"
        if job:
            detail += f"  (job {job.get('job_id')} {job.get('status')})"
        out.write(
            f"{ns:<24}{row['stored']:>8}{row['indexed']:>9}{row['pending']:>9}{row['routed_share']:>8.0%}"
            f"{row['saved_usd']:>10.4f}  {detail}\n"
        )
    return 0


def cmd_train(args: argparse.Namespace, out: TextIO) -> int:
    distiller = _distiller()
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
    distiller = _distiller()
    target = open(args.output, "w", encoding="utf-8") if args.output else out  # noqa: SIM115
    count = 0
    try:
        for example in distiller.trainer.export(args.namespace):
            target.write(json.dumps(example, ensure_ascii=False) + "\n")
            count += 1
    finally:
        distiller.close()
        if target is not out:
            target.close()
    if args.output:
        print(f"{count} examples written to {args.output}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from distillkit.demo import run

    run(args.requests, args.round_every, seed=args.seed, out=out, threshold=args.threshold)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillkit", description="Distil what your OpenAI calls already know.")
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser("status", help="per namespace: data, active model, jobs, routed share, savings")
    status.add_argument("--json", action="store_true", help="print JSON")
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

    demo = commands.add_parser("demo", help="run the whole loop offline against the simulator")
    demo.add_argument("--requests", type=int, default=1200)
    demo.add_argument("--round-every", type=int, default=200)
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
