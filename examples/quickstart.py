"""The whole loop in one screen, offline: capture → train → the distilled model answers.

    python examples/quickstart.py

For the full demo with a live view, run `distillkit demo`.
"""

import tempfile

from openai import OpenAI

import distillkit
from distillkit.testing import Simulator
from distillkit.training import OpenAIFineTuningProvider

QUESTIONS = [
    "Where is my new card?",
    "My card still hasn't arrived",
    "When will my card be delivered?",
    "How long does it take to get a card?",
    "Has my card been sent yet?",
    "Is my card on its way?",
    "I ordered a card a week ago and it is not here",
    "Card delivery status please",
    "My new card did not come in the mail",
    "How can I track my card?",
    "Where is the card I ordered?",
    "Still waiting for my card",
]

with Simulator(job_step_seconds=0.02) as sim, tempfile.TemporaryDirectory() as folder:  # OpenAI look-alike, store
    distiller = distillkit.Distiller(
        distillkit.DistillConfig(path=folder, min_examples=10),
        fine_tuning_provider=OpenAIFineTuningProvider(sim.client()),  # train "on OpenAI" (simulated)
    )
    client: OpenAI = distillkit.wrap(sim.client(), distiller)  # the one line a real program adds

    def ask(question: str) -> str:
        response = client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": question}])
        info = distillkit.route_info(response)
        return f"{question!r:50} -> {response.model} ({info.reason})"

    for q in QUESTIONS:  # 1. the teacher answers; every answer is captured
        print(ask(q))
    for r in distiller.train_now(wait=True, timeout=30):  # 2. a fine-tuning round on what was captured
        print(f"trained {r.namespace}: {r.status} -> {r.model}")
    print(ask("Where is my new card??"))  # 3. a similar request: the distilled model answers
    print(ask("How do I close my account?"))  # something new: the teacher again
    distiller.close()
