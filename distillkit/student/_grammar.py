"""Greedy decoding under a grammar without checking the whole vocabulary at every token.

A JSON request (``response_format`` ``json_object`` / ``json_schema``) makes llama-cpp-python add a
grammar to its sampler chain, and the chain then checks every token of the vocabulary against the
grammar before the greedy pick: about 50k checks per generated token for SmolLM2, 262k for Gemma 3,
where a 54-token JSON answer of the Gemma student took minutes. llama.cpp's own server samples
first and checks only the chosen token (``common_sampler_sample``); this does the same for greedy
requests: the most likely token is taken when the grammar accepts it, and only when it does not
does the chain run as usual. Both ways give the same token: the greedy pick under the grammar
*is* the most likely token whenever the grammar allows it.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

__all__ = ["greedy_under_grammar"]


def greedy_under_grammar(llm: Any, kwargs: dict[str, Any]) -> int | None:
    """The token ``Llama.sample(**kwargs)`` would return, found cheaply, and accepted by the chain;
    None where the fast way does not apply (no grammar, sampling, penalties, logits processors) or
    the most likely token breaks the grammar: then the caller samples as usual."""
    chain = getattr(llm, "_sampler", None)
    if (
        kwargs.get("grammar") is None
        or chain is None
        or kwargs.get("temp") != 0.0
        or kwargs.get("logits_processor") is not None
        or kwargs.get("repeat_penalty", 1.0) != 1.0
        or kwargs.get("frequency_penalty", 0.0) != 0.0
        or kwargs.get("presence_penalty", 0.0) != 0.0
    ):
        return None
    import llama_cpp  # here, past the checks every sampled token makes

    grammar = _grammar_sampler(llama_cpp, chain.sampler)
    if grammar is None:
        return None
    idx = kwargs.get("idx")
    row = -1 if idx is None else idx - llm.n_tokens
    n_vocab = int(llm.n_vocab())
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, row), shape=(n_vocab,))
    token = int(np.argmax(logits))
    candidate = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, float(logits[token]), 0.0))
    single = llama_cpp.llama_token_data_array(data=candidate, size=1, selected=-1, sorted=False)
    llama_cpp.llama_sampler_apply(grammar, ctypes.byref(single))
    if math.isinf(candidate[0].logit) and candidate[0].logit < 0:
        return None  # the grammar rejects the most likely token: the full check picks another
    llama_cpp.llama_sampler_accept(chain.sampler, token)  # penalties, grammar and greedy all note it
    return token


def _grammar_sampler(llama_cpp: Any, chain: Any) -> Any:
    """The chain's grammar sampler, or None."""
    for i in range(llama_cpp.llama_sampler_chain_n(chain)):
        sampler = llama_cpp.llama_sampler_chain_get(chain, i)
        if llama_cpp.llama_sampler_name(sampler) == b"grammar":
            return sampler
    return None
