"""The examples and the demo run as a user would run them (offline, against the simulator)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("quickstart.py", "'Where is my new card??'                           -> ft:gpt-4.1-nano"),
        ("decorator.py", "classify: 2 requests, 2 captured"),
        ("async_streaming.py", "captured=2"),
        ("self_hosted_student.py", "answered by gpt-4.1 - distilled model failed"),
        ("openai_distillation.py", "card-support: succeeded ft:"),
    ],
)
def test_example_runs(script: str, expected: str) -> None:
    assert expected in run(str(EXAMPLES / script))


@pytest.mark.skipif(not importlib.util.find_spec("peft"), reason="needs distillkit[lora]")
def test_lora_example_routes_to_the_adapter_which_answers_in_the_teachers_words() -> None:
    output = run(str(EXAMPLES / "lora_student.py"))
    assert "LoRA job succeeded: 10 examples" in output
    assert "'Has my card been shipped?'                -> distillkit-default-" in output
    assert ": Your card ships within 3 days." in output
    assert "'What is the capital of France?'           -> gpt-4.1" in output


def test_demo_shows_the_distilled_model_taking_over() -> None:
    output = run("-m", "distillkit.cli", "demo", "--student", "simulated", "--requests", "300", "--round-every", "100")
    rounds = [line.split() for line in output.splitlines() if line.strip()[:1].isdigit() and "ft:" in line]
    assert len(rounds) == 3
    assert rounds[-1][2] != "0%"  # the last round's requests were partly answered by the distilled model
    assert "answered by the distilled model" in output


def test_demo_without_the_local_extra_says_what_to_install_in_one_line() -> None:
    # llama_cpp made unimportable in the child (``sys.modules[name] = None`` is how Python marks a
    # module as absent), so this runs whether or not distillkit[local] is installed here.
    script = "import sys; sys.modules['llama_cpp'] = None; from distillkit.cli import main; sys.exit(main(['demo']))"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stderr
    first = done.stdout.splitlines()[0]
    assert "pip install 'distillkit[local]'" in first and "missing: llama_cpp" in first, first
    assert "distillkit demo --student simulated" in done.stdout
