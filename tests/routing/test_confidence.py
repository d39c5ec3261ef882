"""The student's confidence: the lowest log-probability of its answer's tokens (JSON: of its values)."""

from __future__ import annotations

from openai.types.chat import ChatCompletion

from distillkit.routing.confidence import confidence, json_value_mask, strip_logprobs


def completion(tokens: list[tuple[str, float]] | None) -> ChatCompletion:
    logprobs = None
    if tokens is not None:
        logprobs = {
            "content": [{"token": t, "logprob": p, "bytes": list(t.encode()), "top_logprobs": []} for t, p in tokens]
        }
    return ChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "student",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": logprobs,
                    "message": {"role": "assistant", "content": "".join(t for t, _ in tokens or [])},
                }
            ],
        }
    )


def test_the_lowest_token_log_probability_is_the_confidence() -> None:
    assert confidence(completion([("Hello", -0.01), (" there", -0.7), ("!", -0.2)])) == -0.7
    assert confidence(completion(None)) is None


def test_json_confidence_reads_only_the_values() -> None:
    tokens = [('{"', -0.001), ("amount", -3.0), ('":', -2.0), (" 4", -0.05), ("5", -0.4), (', "', -0.001)]
    tokens += [("name", -5.0), ('":', -0.0), (' "', -0.2), ("Ana", -0.3), ('"}', -0.0)]
    done = completion(tokens)
    # Key tokens ("amount", "name") are unsure here, yet only the value tokens count; ' "' opens a value.
    assert confidence(done, json_values=True) == -0.4
    assert confidence(done) == -5.0


def test_value_mask_marks_values_not_keys() -> None:
    text = '{"a": "x y", "b": [1, true, null], "c": {"d": -2.5}}'
    marked = "".join(ch for ch, inside in zip(text, json_value_mask(text), strict=True) if inside)
    assert marked == "x y1truenull-2.5"


def test_log_probabilities_are_removed_before_the_caller_sees_the_answer() -> None:
    done = completion([("ok", -0.1)])
    strip_logprobs(done)
    assert done.choices[0].logprobs is None
