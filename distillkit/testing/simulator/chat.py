"""Chat completions (streamed or not) and embeddings, answered by the teacher's or a student's
answer function.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import re
import struct
import time
from collections.abc import Callable
from typing import Any

from distillkit.testing.simulator.answers import AnswerFn, Reply, _normalise_reply, _text_of, _words, _wrong
from distillkit.testing.simulator.http import _ApiError, _Response, _StreamResponse
from distillkit.testing.simulator.lora import _Models

_FINGERPRINT = "fp_distillkit_sim"


@functools.lru_cache(maxsize=65536)
def _word_vector(word: str, dims: int) -> tuple[float, ...]:
    """A pseudo-random vector in [-1, 1]^dims seeded by sha256(word)."""
    out: list[float] = []
    block = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{block}:{word}".encode()).digest()
        out.extend(v / 2147483648.0 - 1.0 for v in struct.unpack("<8I", digest))
        block += 1
    return tuple(out[:dims])


def _embed(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for ``text``.

    It is a sum of per-word hash vectors (feature hashing) rather than one hash of the whole text,
    so texts that share words come out similar. Demos of similarity routing then behave sensibly,
    and identical texts always give identical vectors.
    """
    words = re.findall(r"\w+", text.lower()) or [f"\x00{text}"]
    acc = [0.0] * dims
    for word in words:
        for i, v in enumerate(_word_vector(word, dims)):
            acc[i] += v
    norm = sum(v * v for v in acc) ** 0.5 or 1.0
    return [v / norm for v in acc]


def _split_text(text: str) -> list[str]:
    """Split text for streaming: one piece per word, keeping the whitespace so pieces join back."""
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece] or [text]


class _Chat(_Models):
    """``/v1/chat/completions`` and ``/v1/embeddings``; :meth:`student_wrong` rules."""

    answer: AnswerFn
    student_answer: AnswerFn | None
    embedding_dimensions: int
    _wrong: list[tuple[Callable[[dict[str, Any]], bool], float, str | None]]

    def student_wrong(
        self,
        when: Callable[[dict[str, Any]], bool] | None = None,
        *,
        rate: float = 1.0,
        model: str | None = None,
    ) -> None:
        """Make student models answer *wrongly* for chosen requests (the teacher is unaffected).

        A wrong answer is the right one (``student_answer``'s) turned into another deterministic
        text, ``"wrong: <reversed words>"``, so it never agrees with the teacher. Rules add up; a
        request matching any rule is answered wrongly. Everything stays deterministic: ``rate``
        picks a fixed share of the distinct conversations (by a hash of the messages), so asking
        the same thing twice gets the same answer.

        Args:
            when: which requests (the parsed chat body, ``model`` included); None: all of them.
            rate: the share of the matching conversations answered wrongly (0 to 1).
            model: only this student model (e.g. the candidate of one training job); None: all.

        Example:
            >>> sim.student_wrong(lambda body: "refund" in body["messages"][-1]["content"])  # doctest: +SKIP
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate!r}")
        with self._lock:
            self._wrong.append((when or (lambda body: True), rate, model))

    def student_right(self) -> None:
        """Remove every rule added with :meth:`student_wrong`."""
        with self._lock:
            self._wrong.clear()

    def _answers_wrongly(self, body: dict[str, Any], salt: str) -> bool:
        with self._lock:
            rules = list(self._wrong)
        share = int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "big") / 2**64
        return any(
            (model is None or body.get("model") == model) and share < rate and when(copy.deepcopy(body))
            for when, rate, model in rules
        )

    def _is_student(self, model: str) -> bool:
        """Whether ``model`` is a served student model (404 for an unknown ``ft:`` name)."""
        with self._lock:
            self._progress_jobs()
            if model in self._added_models or model in self._lora:
                return True
            if model.startswith("ft:"):
                if any(job.data["fine_tuned_model"] == model for job in self._jobs.values()):
                    return True
                raise _ApiError(
                    404,
                    f"The model `{model}` does not exist or you do not have access to it.",
                    code="model_not_found",
                )
        return False

    def _chat(self, body: Any) -> _Response | _StreamResponse:
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _ApiError(400, "you must provide a model parameter", param="model")
        messages = body.get("messages")
        if messages is None:
            raise _ApiError(400, "Missing required parameter: 'messages'.", param="messages")
        if not isinstance(messages, list) or not messages:
            raise _ApiError(400, "Invalid 'messages': expected a non-empty array of message objects.", param="messages")
        for i, item in enumerate(messages):
            if not isinstance(item, dict) or not isinstance(item.get("role"), str):
                raise _ApiError(400, f"Missing required parameter: 'messages[{i}].role'.", param=f"messages[{i}].role")
        student = self._is_student(model)
        fn = (self.student_answer or self.answer) if student else self.answer
        salt = json.dumps(messages, sort_keys=True)
        n = body.get("n") or 1
        if not isinstance(n, int) or n < 1:
            raise _ApiError(400, "Invalid 'n': expected a positive integer.", param="n")
        # A copy, so an answer function that edits the request cannot rewrite the request log.
        reply = _normalise_reply(fn(copy.deepcopy(body)), salt)
        if student and self._answers_wrongly(body, salt):
            reply = _wrong(reply)
        completion_id = self._id("chatcmpl-", 29)
        created = int(time.time())
        prompt_tokens = sum(_words(_text_of(m.get("content"))) + 1 for m in messages)
        completion_tokens = _words(reply.content) + sum(
            _words(call["function"]["arguments"]) + 1 for call in reply.tool_calls or []
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens * n,
            "total_tokens": prompt_tokens + completion_tokens * n,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if body.get("stream") is True:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = self._chunks(completion_id, created, model, reply, n, usage, include_usage)
            return _StreamResponse(chunks)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.content,
            "refusal": None,
            "annotations": [],
        }
        logprobs = None
        if body.get("logprobs") and reply.content:
            # Tokens as a real tokenizer splits them, roughly: words with their leading space, and
            # punctuation on its own.
            pieces = re.findall(r"\s*[A-Za-z0-9_.]+|\s*[^A-Za-z0-9_.\s]|\s+", reply.content)
            logprobs = {
                "content": [
                    {"token": p, "logprob": reply.logprob, "bytes": list(p.encode()), "top_logprobs": []}
                    for p in pieces
                ],
                "refusal": None,
            }
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        return self._json(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": i, "message": message, "logprobs": logprobs, "finish_reason": reply.finish_reason}
                    for i in range(n)
                ],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": _FINGERPRINT,
            }
        )

    @staticmethod
    def _chunks(
        completion_id: str,
        created: int,
        model: str,
        reply: Reply,
        n: int,
        usage: dict[str, Any],
        include_usage: bool,
    ) -> list[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects OpenAI would stream for ``reply``."""

        def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": _FINGERPRINT,
                "choices": choices,
            }
            if include_usage:
                out["usage"] = None
            return out

        def delta(index: int, d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return chunk([{"index": index, "delta": d, "logprobs": None, "finish_reason": finish}])

        chunks: list[dict[str, Any]] = []
        for index in range(n):
            chunks.append(delta(index, {"role": "assistant", "content": "", "refusal": None}))
            if reply.content:
                chunks.extend(delta(index, {"content": piece}) for piece in _split_text(reply.content))
            for call_index, call in enumerate(reply.tool_calls or []):
                head = {
                    "index": call_index,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
                chunks.append(delta(index, {"tool_calls": [head]}))
                arguments = call["function"]["arguments"]
                for start in range(0, len(arguments), 8):
                    piece = {"index": call_index, "function": {"arguments": arguments[start : start + 8]}}
                    chunks.append(delta(index, {"tool_calls": [piece]}))
            chunks.append(delta(index, {}, reply.finish_reason))
        if include_usage:
            final = chunk([])
            final["usage"] = usage
            chunks.append(final)
        return chunks

    # ------------------------------------------------------------------ embeddings

    def _embeddings(self, body: Any) -> _Response:
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _ApiError(400, "you must provide a model parameter", param="model")
        raw_input = body.get("input")
        texts = [raw_input] if isinstance(raw_input, str) else raw_input
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _ApiError(
                400,
                "Invalid 'input': expected a string or a non-empty array of strings "
                "(token arrays are not supported by the simulator).",
                param="input",
            )
        dims = body.get("dimensions") or self.embedding_dimensions
        if not isinstance(dims, int) or dims < 1:
            raise _ApiError(400, "Invalid 'dimensions': expected a positive integer.", param="dimensions")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _ApiError(400, "Invalid 'encoding_format': expected 'float' or 'base64'.", param="encoding_format")
        data = []
        for index, text in enumerate(texts):
            vector = _embed(text, dims)
            embedding: Any = vector
            if encoding == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(max(_words(t), 1) for t in texts)
        return self._json(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )
