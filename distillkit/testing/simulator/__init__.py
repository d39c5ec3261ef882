"""An OpenAI-compatible HTTP server for offline tests, examples and demos.

The :class:`Simulator` speaks enough of the OpenAI REST API (chat completions, streaming,
embeddings, files, fine-tuning jobs, models) plus vLLM's runtime LoRA endpoints for the real
``openai`` SDK to talk to it over HTTP. Nothing is mocked on the client side, so a test exercises
the exact code path production uses: request building, retries, streaming, error mapping.

Everything is deterministic (answers, embeddings, ids, token counts), it needs only the standard
library, and it runs in a daemon thread on ``127.0.0.1`` on a free port::

    with Simulator() as sim:
        client = sim.client()
        reply = client.chat.completions.create(model="gpt-4.1-mini", messages=[...])

Faults (HTTP errors, latency, dropped connections, broken streams) can be injected per endpoint,
and every request is logged for assertions.

Modules: :mod:`~.core` (serving, the request log), :mod:`~.http`, :mod:`~.chat` (and
:mod:`~.answers`), :mod:`~.files`, :mod:`~.fine_tuning`, :mod:`~.lora` (models and adapters),
:mod:`~.faults`.
"""

from distillkit.testing.simulator.answers import AnswerFn, Reply, default_answer
from distillkit.testing.simulator.core import LoggedRequest, Simulator
from distillkit.testing.simulator.faults import Fault
from distillkit.testing.simulator.lora import BASE_MODELS

__all__ = ["BASE_MODELS", "AnswerFn", "Fault", "LoggedRequest", "Reply", "Simulator", "default_answer"]
