"""AsyncOpenAI with streaming: chunks pass through untouched; a stream read to its end is captured.

python examples/async_streaming.py
"""

import asyncio
import tempfile

import distillkit
from distillkit.testing import Simulator


async def main(sim: Simulator, folder: str) -> None:
    distiller = distillkit.Distiller(distillkit.DistillConfig(path=folder))
    client = distillkit.wrap(sim.async_client(), distiller)

    async def answer(question: str) -> str:
        stream = await client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": question}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        return "".join(parts)

    async def impatient(question: str) -> None:
        stream = await client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": question}], stream=True
        )
        async with stream:  # left after the first chunk: an abandoned answer is not training data
            await stream.__anext__()

    print(await asyncio.gather(answer("What is my balance?"), answer("Where is my card?"), impatient("Hello?")))
    distiller.flush()
    print(distiller.stats()["default"])
    await client.close()
    distiller.close()


with Simulator() as sim, tempfile.TemporaryDirectory() as folder:
    asyncio.run(main(sim, folder))
