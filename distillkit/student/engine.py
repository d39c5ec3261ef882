"""The student's model on a CPU: one llama.cpp base model and the LoRA adapters loaded onto it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillkit.errors import ConfigError
from distillkit.student._grammar import greedy_under_grammar
from distillkit.student._logprobs import MAX_TOP_LOGPROBS, TokenLogprobs
from distillkit.training.lora.base_models import SMOLLM2, local_model, with_system_prompt
from distillkit.training.lora.gguf import ADAPTER_GGUF, convert_peft_to_gguf

__all__ = ["Engine", "EngineError", "UnknownModel"]

#: Request keys passed to llama.cpp as they are.
_PASSED = ("top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "response_format")
_INSTALL = (
    "pip install 'distillkit[local]' with the llama.cpp build flags the README gives "
    '(CMAKE_ARGS="-DGGML_NATIVE=OFF ...").'
)


class EngineError(ValueError):
    """A request the engine cannot serve (HTTP 400); the message says why."""


class UnknownModel(KeyError):
    """No base model or adapter of that name (HTTP 404)."""


class Engine:
    """A base model (GGUF, memory-mapped once) plus named LoRA adapters; one generation at a time.

    A request names the base model or an adapter as its ``model``, like vLLM. Switching adapters
    costs about a millisecond (``llama_set_adapters_lora``); the KV cache is then dropped, since
    a prompt prefix cached under another adapter would give wrong answers. llama.cpp's context is
    not thread-safe, so :attr:`lock` serialises requests.

    Args:
        base_model: ``"smollm2-135m"`` (packaged, see :mod:`distillkit.training.lora.base_models`)
            or the path of a ``.gguf`` model file.
        n_ctx: context length in tokens (prompt and answer).
        n_threads: CPU threads (default: llama.cpp's, half the cores for generation; on a
            crowded machine, fewer threads than cores are faster).
        logprobs: accepted for compatibility and ignored. Every request may ask for ``logprobs``
            / ``top_logprobs`` (see :meth:`chat`); they once needed this, which made llama.cpp
            compute the output layer for every prompt token and slowed every request down.
    """

    def __init__(
        self, base_model: str = SMOLLM2, *, n_ctx: int = 1024, n_threads: int | None = None, logprobs: bool = False
    ) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise ConfigError("The local student needs llama-cpp-python.", fix=_INSTALL) from None
        packaged = local_model(base_model)
        self.system_prompt: str | None
        chat_template = packaged.chat_template if packaged is not None else None
        if packaged is not None:
            self.base_gguf, self.name, self.system_prompt = packaged.gguf, packaged.name, packaged.system_prompt
        elif base_model.endswith(".gguf") and Path(base_model).is_file():
            self.base_gguf, self.name, self.system_prompt = Path(base_model), Path(base_model).stem, None
        else:
            raise ConfigError(
                f"The student server serves a packaged model or a .gguf file, not {base_model!r}.",
                fix=f"Use {SMOLLM2!r} or the path of a .gguf file; serve other models with vLLM.",
            )
        self._llama = llama_cpp
        self.llm = llama_cpp.Llama(
            model_path=str(self.base_gguf),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            # Flash attention on: llama-cpp-python 0.3.36's portable CPU build (AVX2, the README's
            # flags) computes a wrong answer for prompts evaluated in one batch without it
            # ("What is the capital of France?" -> "La femme de France, ..."); with it, or one
            # token at a time, SmolLM2 answers "The capital of France is Paris."
            flash_attn=True,
            verbose=False,
        )
        if chat_template is not None:  # the template the LoRA worker trained with (base GGUFs have none)
            self.llm.chat_handler = self._template_handler(chat_template)
        self.lock = threading.RLock()
        self._adapters: dict[str, Any] = {}  # name -> llama_adapter_lora_p
        self._loaded_at: dict[str, int] = {}
        self._paths: dict[str, str] = {}
        self._active: str | None = None
        self._converted = tempfile.TemporaryDirectory(prefix="distillkit-student-")
        self._logprobs: TokenLogprobs | None = None  # the generation under way, when it asked
        # Llama.generate samples every token through self.sample; shadowing it on this instance
        # reads each sampled token's log-probability while its logits are still in the context.
        self._llama_sample = self.llm.sample
        self.llm.sample = self._sample  # type: ignore[method-assign]

    def _template_handler(self, template: str) -> Any:
        """A chat handler rendering ``template`` with the model's own BOS and EOS, as llama-cpp-python
        does for a template found in the GGUF."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        model, eos, bos = self.llm._model, self.llm.token_eos(), self.llm.token_bos()
        return Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        ).to_chat_handler()

    # --- adapters -----------------------------------------------------------------------------

    def load_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Load the LoRA adapter at ``path`` (a peft folder or a llama.cpp ``.gguf``) as model ``name``."""
        path = Path(path)
        with self.lock:
            if name in self._adapters or name == self.name:
                raise EngineError(f"The lora adapter '{name}' has already been loaded.")
        if path.is_dir():  # a peft folder, as vLLM takes it; the LoRA worker converts next to it
            gguf = path / ADAPTER_GGUF
            if not gguf.is_file():
                gguf = convert_peft_to_gguf(path, self.base_gguf, Path(self._converted.name) / f"{name}.gguf")
        elif path.is_file():
            gguf = path
        else:
            raise EngineError(f"Loading lora {name} failed: No adapter found for {path}")
        with self.lock:
            adapter = self._llama.llama_adapter_lora_init(self.llm.model, str(gguf).encode())
            if not adapter:
                raise EngineError(f"Loading lora {name} failed: llama.cpp could not read {gguf}")
            self._adapters[name], self._loaded_at[name], self._paths[name] = adapter, int(time.time()), str(path)

    def unload_adapter(self, name: str) -> None:
        """Unload adapter ``name``; raises :class:`UnknownModel` when it is not loaded."""
        with self.lock:
            if name not in self._adapters:
                raise UnknownModel(f"The lora adapter '{name}' cannot be found.")
            if self._active == name:
                self._select(None)
            adapter = self._adapters.pop(name)
            del self._loaded_at[name], self._paths[name]
            self._llama.llama_adapter_lora_free(adapter)

    @property
    def adapters(self) -> dict[str, str]:
        """Loaded adapters, ``{name: path as given}``."""
        with self.lock:
            return dict(self._paths)

    def _select(self, name: str | None) -> None:
        """Make ``name`` (None: the bare base model) the context's only adapter; holds the lock."""
        if name == self._active:
            return
        llama = self._llama
        if name is None:
            code = llama.llama_set_adapters_lora(self.llm.ctx, None, 0, None)
        else:
            adapters = (llama.llama_adapter_lora_p_ctypes * 1)(self._adapters[name])
            code = llama.llama_set_adapters_lora(self.llm.ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
        if code:
            raise RuntimeError(f"llama_set_adapters_lora failed ({code})")
        self.llm.reset()  # the cached prompt prefix's K/V were computed under the previous adapter
        self.llm._ctx.kv_cache_clear()
        self._active = name

    # --- requests -----------------------------------------------------------------------------

    def chat(self, body: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """A chat completion (a dict, or an iterator of chunks when ``stream``).

        Call it holding :attr:`lock`, until a stream is consumed.

        Greedy decoding unless the request sets ``temperature``: a distilled student should say
        what it learnt. Tools and ``n > 1`` are refused (the router sends those to the teacher).

        ``logprobs: true`` (with ``top_logprobs`` 0 to 20) gives ``choices[0].logprobs.content``
        as OpenAI and vLLM do: one ``{"token", "logprob", "bytes", "top_logprobs"}`` per token of
        the answer, read from the logits llama.cpp computes at each step anyway (no noticeable
        extra latency; docs/benchmarks.md). A streamed answer carries each chunk's tokens in that
        chunk. The values are the model's own distribution, before temperature or penalties; the
        end-of-turn token and text a ``stop`` sequence cut off get no entry, so the entries'
        ``bytes`` joined are the answer (their ``token`` strings too, unless a token splits a
        UTF-8 character).
        """
        model = body.get("model") or self.name
        if model != self.name and model not in self._adapters:
            raise UnknownModel(f"The model `{model}` does not exist.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise EngineError("'messages' must be a non-empty list.")
        if body.get("tools") or body.get("functions"):
            raise EngineError("The student server does not serve tool calls; the router sends them to the teacher.")
        if (body.get("n") or 1) != 1:
            raise EngineError("n > 1 is not supported.")
        kwargs: dict[str, Any] = {k: body[k] for k in _PASSED if body.get(k) is not None}
        temperature = body.get("temperature")
        kwargs["temperature"] = 0.0 if temperature is None else float(temperature)
        kwargs["max_tokens"] = body.get("max_completion_tokens") or body.get("max_tokens") or 256
        kwargs["stream"] = bool(body.get("stream"))
        logprobs = _top_logprobs(body)
        prompt = [_text_content(m) for m in with_system_prompt(list(messages), self.system_prompt)]
        self._select(None if model == self.name else model)
        recorder = None if logprobs is None else TokenLogprobs(self.llm, logprobs)
        self._logprobs = recorder
        try:
            result: Any = self.llm.create_chat_completion(messages=prompt, **kwargs)  # type: ignore[arg-type]
        finally:
            self._logprobs = None
        if kwargs["stream"]:  # a generator: llama.cpp generates while _chunks reads it
            return self._chunks(result, model, recorder)
        result["model"] = model
        if recorder is not None:
            answer = (result["choices"][0]["message"]["content"] or "").encode()
            result["choices"][0]["logprobs"] = {"content": recorder.take(len(answer)), "refusal": None}
        return dict(result)

    def _sample(self, *args: Any, **kwargs: Any) -> int:
        """``Llama.sample`` (greedy under a grammar the fast way, :mod:`distillkit.student._grammar`),
        noting the sampled token's log-probability when the request asked."""
        fast = greedy_under_grammar(self.llm, kwargs)
        token: int = self._llama_sample(*args, **kwargs) if fast is None else fast
        if self._logprobs is not None:
            idx = kwargs.get("idx")  # as Llama.sample reads it: the output row, from the last
            self._logprobs.record(token, -1 if idx is None else idx - self.llm.n_tokens)
        return token

    def _chunks(
        self, chunks: Iterator[dict[str, Any]], model: str, logprobs: TokenLogprobs | None
    ) -> Iterator[dict[str, Any]]:
        """A stream's chunks under the request's model name, each with its tokens' logprobs when asked."""
        sent = 0
        self._logprobs = logprobs
        try:
            for chunk in chunks:
                chunk["model"] = model
                if logprobs is not None and chunk["choices"]:
                    choice = chunk["choices"][0]
                    sent += len((choice["delta"].get("content") or "").encode())
                    entries = logprobs.take(sent)
                    choice["logprobs"] = {"content": entries, "refusal": None} if entries else None
                yield dict(chunk)
        finally:
            if self._logprobs is logprobs:  # an abandoned stream, closed late, leaves a newer request's alone
                self._logprobs = None

    def models(self) -> list[dict[str, Any]]:
        """``/v1/models``' entries: the base model, then each adapter with the base as its parent."""
        with self.lock:
            loaded = dict(self._loaded_at)
        data = [
            {
                "id": self.name,
                "object": "model",
                "created": 0,
                "owned_by": "distillkit",
                "root": self.name,
                "parent": None,
            }
        ]
        data += [
            {
                "id": n,
                "object": "model",
                "created": t,
                "owned_by": "distillkit",
                "root": self._paths.get(n, n),
                "parent": self.name,
            }
            for n, t in loaded.items()
        ]
        return data

    def close(self) -> None:
        """Free the adapters, then the model."""
        with self.lock:
            for name in list(self._adapters):
                with contextlib.suppress(Exception):
                    self.unload_adapter(name)
            self.llm.close()
            self._converted.cleanup()


def _text_content(message: dict[str, Any]) -> dict[str, Any]:
    """A message with its content as text (OpenAI's content parts joined; images refused)."""
    content = message.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise EngineError("The student server takes text content only.")
            texts.append(str(part.get("text", "")))
        content = "".join(texts)
    return {"role": message.get("role", "user"), "content": "" if content is None else str(content)}


def _top_logprobs(body: dict[str, Any]) -> int | None:
    """How many alternatives each token's entry lists, or None when the request wants no logprobs."""
    top = body.get("top_logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise EngineError(f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}, not {top!r}.")
    if not body.get("logprobs"):
        if top:
            raise EngineError("top_logprobs needs logprobs: true.")
        return None
    return top or 0
