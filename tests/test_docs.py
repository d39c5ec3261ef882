"""The documentation cannot drift from the code: every setting is documented, every cited test exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from distillkit.config import ENV

ROOT = Path(__file__).resolve().parents[1]


def documented_variables(text: str) -> set[str]:
    """Environment variable names in the first column of the configuration table."""
    names: set[str] = set()
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and line.startswith("|"):
            names.update(re.findall(r"`((?:DISTILLKIT|QDRANT)_[A-Z_]+)`", cells[1]))
    return names


def test_every_environment_variable_is_documented_and_nothing_else() -> None:
    documented = documented_variables((ROOT / "docs" / "configuration.md").read_text())
    in_code = {value for name, value in vars(ENV).items() if not name.startswith("_") and isinstance(value, str)}
    assert in_code - documented == set(), "add these to docs/configuration.md"
    assert documented - in_code == set(), "docs/configuration.md names variables distillkit does not read"


def test_the_table_parser_sees_a_missing_variable() -> None:
    table = "| variable | default |\n|---|---|\n| `DISTILLKIT_PATH` | x |\n"
    assert documented_variables(table) == {"DISTILLKIT_PATH"}


def test_every_test_cited_in_the_docs_exists() -> None:
    cited = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        cited.update(re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", page.read_text()))
    assert cited, "the reliability page cites its tests"
    for path, name in sorted(cited):
        file = ROOT / path
        assert file.is_file(), f"{path} is cited but does not exist"
        if name:
            defined = {
                n.name
                for n in ast.walk(ast.parse(file.read_text()))
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            }
            assert name in defined, f"{path}::{name} is cited but not defined"
