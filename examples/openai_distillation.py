"""The loop against the real OpenAI API: capture gpt-4.1's answers, fine-tune a small model, route to it.

    OPENAI_API_KEY=sk-... python examples/openai_distillation.py

Costs real money (a fine-tuning job of a few cents with the defaults). Without OPENAI_API_KEY
it runs against the simulator instead. Note: OpenAI stops new fine-tuning jobs on 2027-01-06;
see the README for other providers.
"""

import os
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
SYSTEM = "You are the support assistant of an online bank. Answer in one sentence."


def run(client: OpenAI, folder: str) -> None:
    config = distillkit.DistillConfig(path=folder, min_examples=10, namespace="card-support")
    distiller = distillkit.Distiller(config, fine_tuning_provider=OpenAIFineTuningProvider(client))
    distillkit.wrap(client, distiller)

    def ask(question: str) -> None:
        response = client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        )
        print(f"[{response.model}] {question} -> {response.choices[0].message.content}")

    for question in QUESTIONS:
        ask(question)
    print("fine-tuning (on OpenAI this takes minutes to an hour)...")
    for r in distiller.train_now(wait=True, timeout=3 * 3600):
        print(f"{r.namespace}: {r.status} {r.model or r.reason or ''}")
    ask("Where is my new card??")
    distiller.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        if os.environ.get("OPENAI_API_KEY"):
            run(OpenAI(), folder)
        else:
            with Simulator(job_step_seconds=0.05) as sim:
                run(sim.client(), folder)
