"""The log-probabilities of the tokens a llama.cpp model samples, in OpenAI's chat format.

llama.cpp computes the output layer for the last position of every decoding step anyway: that
row holds the distribution the next token is sampled from. :class:`TokenLogprobs` reads it right
after each token is sampled, so an answer's log-probabilities cost one log-sum-exp over the
vocabulary per generated token, not ``logits_all`` (the output layer for every prompt token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MAX_TOP_LOGPROBS", "TokenLogprobs"]

#: The most ``top_logprobs`` a request may ask for (OpenAI's and vLLM's default limit).
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class _Step:
    """One sampled token: its id, its log-probability, and the most likely ``(id, logprob)`` pairs."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]


class TokenLogprobs:
    """Records each sampled token's log-probability during one generation.

    The values are the model's own (raw logits, log-softmaxed), before any penalty, temperature
    or top-p, as vLLM returns them by default.

    Args:
        llm: the ``llama_cpp.Llama`` generating.
        top: how many most likely alternatives each entry lists (``top_logprobs``).
    """

    def __init__(self, llm: Any, top: int) -> None:
        import llama_cpp

        self._llm = llm
        self._logits_ith = llama_cpp.llama_get_logits_ith
        self._n_vocab = int(llm.n_vocab())
        self._top = top
        self._buffer = np.empty(self._n_vocab, dtype=np.float32)
        self._steps: list[_Step] = []
        self._bytes: list[bytes] = []  # the sampled tokens' text, filled lazily by take()
        self._taken = 0  # entries handed out
        self._offset = 0  # bytes of text those entries cover

    def record(self, token: int, index: int = -1) -> None:
        """Note ``token``, just sampled from the logits of output row ``index`` (-1: the last)."""
        logits = np.ctypeslib.as_array(self._logits_ith(self._llm.ctx, index), shape=(self._n_vocab,))
        peak = logits.max()
        np.subtract(logits, peak, out=self._buffer)  # in place: half the time of a fresh array
        np.exp(self._buffer, out=self._buffer)
        log_total = float(peak) + float(np.log(self._buffer.sum(dtype=np.float64)))
        top: tuple[tuple[int, float], ...] = ()
        if self._top:
            best = np.argpartition(logits, -self._top)[-self._top :]
            best = best[np.argsort(logits[best])[::-1]]
            top = tuple((int(i), float(logits[i]) - log_total) for i in best)
        self._steps.append(_Step(int(token), float(logits[token]) - log_total, top))

    def take(self, emitted: int) -> list[dict[str, Any]]:
        """OpenAI ``logprobs.content`` entries for the tokens that begin in the first ``emitted`` bytes.

        Called with the answer's length in bytes, it gives the whole answer's entries; called per
        streamed chunk with the bytes sent so far, each chunk's. Tokens past the answer (the end
        of turn token, what a ``stop`` sequence cut off) get none, and a token a ``stop`` sequence
        cuts in two is cut the same way, so the entries' ``bytes`` joined are the answer.
        """
        entries = []
        while self._taken < len(self._steps) and self._offset < emitted:
            step = self._steps[self._taken]
            piece = self._piece(self._taken)[: emitted - self._offset]
            entries.append(
                {
                    "token": piece.decode("utf-8", errors="replace"),
                    "logprob": step.logprob,
                    "bytes": list(piece),
                    "top_logprobs": [self._entry(token, logprob) for token, logprob in step.top],
                }
            )
            self._taken += 1
            self._offset += len(piece)
        return entries

    def _piece(self, i: int) -> bytes:
        while len(self._bytes) <= i:
            self._bytes.append(bytes(self._llm.detokenize([self._steps[len(self._bytes)].token])))
        return self._bytes[i]

    def _entry(self, token: int, logprob: float) -> dict[str, Any]:
        piece = bytes(self._llm.detokenize([token]))
        return {"token": piece.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(piece)}
