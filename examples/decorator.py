"""`@distilled` gives each function its own namespace (its own distilled model and training data).

    python examples/decorator.py

Calls inside a decorated function are intercepted even on a client that was never wrapped,
and the options follow the code into threads started with a copied context and asyncio tasks.
"""

import tempfile

import distillkit
from distillkit.testing import Simulator

with Simulator() as sim, tempfile.TemporaryDirectory() as folder:
    distiller = distillkit.Distiller(distillkit.DistillConfig(path=folder))
    client = sim.client()  # not wrapped: the decorator is enough

    @distillkit.distilled(namespace="classify", distiller=distiller)
    def classify(ticket: str) -> str:
        response = client.chat.completions.create(
            model="gpt-4.1-mini",
            messages=[
                {"role": "system", "content": "Classify the ticket as billing, cards or other."},
                {"role": "user", "content": ticket},
            ],
        )
        return response.choices[0].message.content or ""

    @distillkit.distilled(namespace="reply", threshold=0.95, distiller=distiller)
    def reply(ticket: str) -> str:
        response = client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": ticket}])
        return response.choices[0].message.content or ""

    for ticket in ["I was charged twice", "My card is blocked"]:
        print(classify(ticket), "|", reply(ticket))

    # A call that must never be routed or captured, without a scope:
    client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "one-off"}],
        distillkit={"route": False, "capture": False},
    )

    distiller.flush()
    for namespace, counters in distiller.stats().items():
        print(f"{namespace}: {counters.requests} requests, {counters.captured} captured")
    distiller.close()
