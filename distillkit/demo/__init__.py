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
  the teacher's answer: the *agreement*. Needs ``distillkit[local]``; a few minutes
  (:mod:`~distillkit.demo.real`; the student's set-up in :mod:`~distillkit.demo.local`).
* :func:`run` (``distillkit demo --student simulated``): OpenAI's fine-tuning API, simulated; the
  "fine-tuned model" answers with the teacher's own answer function, so it shows the routing
  and the rounds in seconds, not whether a student learns (:mod:`~distillkit.demo.simulated`).

Both stream the packaged sample (:mod:`~distillkit.demo.sample`).
"""

from __future__ import annotations

from distillkit.demo.local import (
    LOCAL_BASE_MODEL,
    LOCAL_INSTALL,
    MAX_TOKENS,
    REAL_SYSTEM,
    local_missing,
    local_settings,
    local_student,
    short_answer,
)
from distillkit.demo.real import RealDemoResult, run_real
from distillkit.demo.sample import TEACHER, load_sample
from distillkit.demo.simulated import SYSTEM, DemoResult, canned_answer, run

__all__ = [
    "LOCAL_BASE_MODEL",
    "LOCAL_INSTALL",
    "MAX_TOKENS",
    "REAL_SYSTEM",
    "SYSTEM",
    "TEACHER",
    "DemoResult",
    "RealDemoResult",
    "canned_answer",
    "load_sample",
    "local_missing",
    "local_settings",
    "local_student",
    "run",
    "run_real",
    "short_answer",
]
