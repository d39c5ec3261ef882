"""From requests to query text, fingerprints and the reasons never to route."""

from __future__ import annotations

from typing import Any

from distillkit.routing.request import fingerprint, query_text, request_params, unroutable_reason

USER = {"role": "user", "content": "Where is my card?"}


def test_query_is_the_whole_conversation_with_the_last_user_message_first() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "part"}]},
    ]
    # Newest first after the last question; the instructions belong to the fingerprint, not here.
    assert query_text(messages) == "second\npart\n\nassistant: ok\n\nuser: first"
    assert query_text(messages[:2]) == "first"  # one question: just its words
    assert query_text([{"role": "system", "content": "no user"}]) == ""


def test_conversations_that_end_alike_but_differ_before_get_different_texts() -> None:
    def conversation(earlier: str) -> list[dict[str, Any]]:
        return [
            {"role": "user", "content": earlier},
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "And how long does it take?"},
        ]

    card, transfer = conversation("I ordered a new card."), conversation("I sent a bank transfer.")
    assert query_text(card) != query_text(transfer)
    assert query_text(card).startswith("And how long does it take?")


def test_tool_calls_and_results_are_part_of_the_conversation() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18C, sunny"},
    ]
    text = query_text(messages)
    assert text.startswith("Weather in Paris?") and "tool: 18C, sunny" in text and 'weather({"city":"Paris"})' in text


def test_fingerprint_ignores_the_users_words_but_not_the_task() -> None:
    base = {"model": "gpt-4.1", "messages": [{"role": "system", "content": "Be brief."}, USER]}
    other_words = {**base, "messages": [base["messages"][0], {"role": "user", "content": "Something else"}]}
    assert fingerprint(base) == fingerprint(other_words)
    variations = [
        {**base, "model": "gpt-4.1-mini"},
        {**base, "messages": [{"role": "system", "content": "Be verbose."}, USER]},
        {**base, "messages": [{"role": "developer", "content": "Be brief."}, USER]},
        {**base, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {**base, "response_format": {"type": "json_object"}},
        {**base, "tool_choice": "required"},
    ]
    assert len({fingerprint(v) for v in variations} | {fingerprint(base)}) == len(variations) + 1


def test_unroutable_requests() -> None:
    assert unroutable_reason({"messages": [USER]}) is None
    assert unroutable_reason({"messages": [USER], "n": 3}) == "n>1"
    assert unroutable_reason({"messages": [USER], "logprobs": True}) == "logprobs"
    assert unroutable_reason({"messages": [USER], "modalities": ["text", "audio"]}) == "audio output"
    audio_in = {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}
    assert unroutable_reason({"messages": [audio_in]}) == "non-text content"
    assert unroutable_reason({"messages": []}) == "no messages"
    assert unroutable_reason({"messages": ["not a dict"]}) == "malformed message"


def test_params_never_keep_headers_or_transport_details() -> None:
    params = request_params(
        {
            "model": "gpt-4.1",
            "messages": [USER],
            "temperature": 0.1,
            "extra_headers": {"Authorization": "Bearer sk-secret"},
            "timeout": 3,
            "stream": True,
        }
    )
    assert params == {"model": "gpt-4.1", "temperature": 0.1}
