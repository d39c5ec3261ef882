"""BANKING77 loading for the benchmarks (real customer queries, CC BY 4.0; see ../shared/data)."""

from __future__ import annotations

import csv
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"


def banking77(split: str) -> list[tuple[str, str]]:
    """(text, intent) rows of ``train`` or ``test``."""
    path = DATA / f"{split}.csv"
    if not path.exists():
        raise SystemExit(f"{path} not found: the benchmarks read ../shared/data/banking77 beside the repository.")
    with path.open(newline="") as f:
        return [(row["text"], row["category"]) for row in csv.DictReader(f)]
