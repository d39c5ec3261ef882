"""Issue 14 item 6: a shadow check asks the teacher the question the caller asked, not its list as changed later."""

from __future__ import annotations

import asyncio
from pathlib import Path

from _support import KNOWN, train_known

import distillkit
from distillkit import DistillConfig, Distiller
from distillkit.testing import Simulator

STUDENT = "ft:gpt-4.1-nano-2025-04-14:distillkit::shadowsnap"


async def test_shadow_check_sends_the_request_as_it_was_asked(simulator: Simulator, tmp_path: Path) -> None:
    distiller = Distiller(DistillConfig(path=str(tmp_path / "store"), max_error=None), shadow_rate=1.0)
    try:
        sync_client = distillkit.wrap(simulator.client(), distiller)
        train_known(sync_client, distiller, STUDENT, simulator)
        client = distillkit.wrap(simulator.async_client(), distiller)
        simulator.reset_log()
        messages = [{"role": "user", "content": KNOWN[0]}]

        response = await client.chat.completions.create(model="gpt-4.1", messages=messages)
        # The usual conversation loop: the answer and the next question go on the same list at once.
        messages.append({"role": "assistant", "content": response.choices[0].message.content})
        messages.append({"role": "user", "content": "And what about my PIN?"})

        assert distillkit.route_info(response).routed
        for _ in range(100):  # the check runs as a task on this loop
            if simulator.chat_requests(model="gpt-4.1"):
                break
            await asyncio.sleep(0.1)
        [shadow] = simulator.chat_requests(model="gpt-4.1")
        assert shadow["messages"] == [{"role": "user", "content": KNOWN[0]}]
    finally:
        distiller.close()
