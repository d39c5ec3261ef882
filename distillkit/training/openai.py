"""OpenAI's fine-tuning: the chat JSONL format and the files + fine-tuning jobs API.

The reference providers. Any service that reads the same JSONL (most do) only needs its own
:class:`~distillkit.training.FineTuningProvider`.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from distillkit._context import internal_call
from distillkit.errors import FineTuningUnavailableError
from distillkit.training.providers import DatasetProvider, FineTuningProvider, JobStatus

__all__ = ["OpenAIDatasetProvider", "OpenAIFineTuningProvider"]

#: Message keys OpenAI's fine-tuning format accepts; others (``refusal``, ``annotations``,
#: ``audio``... as the SDK returns them in earlier assistant turns) would make the file invalid.
_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "function_call", "weight")
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    """Tool calls reduced to the fields of the training format."""
    if not isinstance(calls, Sequence) or isinstance(calls, (str, bytes)):
        raise ValueError("malformed tool calls")
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not function.get("name"):
            raise ValueError("malformed tool calls")
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        entry: dict[str, Any] = {"type": call.get("type") or "function"}
        if call.get("id"):
            entry["id"] = call["id"]
        entry["function"] = {"name": function["name"], "arguments": arguments}
        out.append(entry)
    return out


def _message(message: Any) -> dict[str, Any]:
    if not isinstance(message, Mapping) or message.get("role") not in _ROLES:
        raise ValueError("malformed messages")
    out = {k: message[k] for k in _MESSAGE_KEYS if message.get(k) is not None}
    if out["role"] == "developer":
        # The training format documents system, user, assistant and tool roles; for the chat
        # models OpenAI fine-tunes, developer and system instructions mean the same thing.
        out["role"] = "system"
    if "tool_calls" in out:
        out["tool_calls"] = _tool_calls(out["tool_calls"])
    return out


class OpenAIDatasetProvider(DatasetProvider):
    """OpenAI's chat fine-tuning JSONL: one ``{"messages": [...], "tools": [...]}`` per line.

    The request's messages are kept whole (system and developer instructions included, the
    latter as ``system``), the teacher's answer is the final assistant turn (tool calls
    included), and ``tools`` / ``functions`` / ``parallel_tool_calls`` are copied when the request
    had them, so the student learns to call the same tools.

    Records are dropped (and counted) when the answer is empty or a refusal, or the messages
    are missing or malformed.
    """

    def example(self, record: Mapping[str, Any]) -> dict[str, Any]:
        messages = record.get("messages")
        if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
            raise ValueError("no messages")
        out = [_message(m) for m in messages]
        response = record.get("response")
        if not isinstance(response, Mapping):
            raise ValueError("no response")
        answer: dict[str, Any] = {"role": "assistant"}
        content = response.get("content")
        if content is not None and not isinstance(content, str):
            raise ValueError("malformed response")
        if content:
            answer["content"] = content
        if response.get("tool_calls"):
            answer["tool_calls"] = _tool_calls(response["tool_calls"])
        if len(answer) == 1:
            raise ValueError("refusal" if response.get("refusal") else "empty response")
        out.append(answer)
        example: dict[str, Any] = {"messages": out}
        params = record.get("params") or {}
        if not isinstance(params, Mapping):
            raise ValueError("malformed params")
        if params.get("tools"):
            example["tools"] = list(params["tools"])
            if isinstance(params.get("parallel_tool_calls"), bool):
                example["parallel_tool_calls"] = params["parallel_tool_calls"]
        if params.get("functions"):
            example["functions"] = list(params["functions"])
        return example

    def encode(self, examples: Sequence[Mapping[str, Any]]) -> bytes:
        lines = (json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in examples)
        return ("\n".join(lines) + "\n").encode("utf-8")


class OpenAIFineTuningProvider(FineTuningProvider):
    """OpenAI's fine-tuning jobs (or any server that speaks that API, like the test simulator).

    Args:
        client: an ``openai.OpenAI`` client; default: ``openai.OpenAI()`` built from the
            environment on first use (never on construction, so importing and configuring
            distillkit makes no client).

    Example:
        >>> provider = OpenAIFineTuningProvider(OpenAI())  # doctest: +SKIP
        >>> job_id = provider.start(data, base_model="gpt-4.1-nano-2025-04-14", namespace="support")  # doctest: +SKIP
    """

    name = "openai"

    def __init__(self, client: Any = None, *, default_client: Callable[[], Any] | None = None) -> None:
        self._client = client
        self._default_client = default_client
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The OpenAI client: the one given; else ``default_client()`` (the :class:`~distillkit.Distiller`
        passes the application's own wrapped client, so its key and base URL are used); else
        ``openai.OpenAI()`` from the environment (a ``distillkit train`` worker that saw no request)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    seen = self._default_client() if self._default_client is not None else None
                    if seen is not None:
                        return seen  # not kept: the application may build another client later
                    import openai

                    self._client = openai.OpenAI()
        return self._client

    finds_jobs = True
    #: Newest jobs :meth:`find` looks through.
    FIND_LIMIT = 1000

    def start(
        self,
        training_file: bytes,
        *,
        base_model: str,
        namespace: str,
        suffix: str | None = None,
        token: str | None = None,
    ) -> str:
        import openai

        client = self.client
        with internal_call():
            uploaded = client.files.create(file=("train.jsonl", training_file), purpose="fine-tune")
            try:
                job = client.fine_tuning.jobs.create(
                    training_file=uploaded.id,
                    model=base_model,
                    metadata={
                        "distillkit_namespace": namespace[:512],
                        **({"distillkit_token": token[:512]} if token else {}),
                    },
                    **({"suffix": suffix} if suffix else {}),
                )
            except openai.APIStatusError as exc:
                if not _refuses_fine_tuning(exc):
                    raise
                with contextlib.suppress(Exception):  # the uploaded file is of no use now
                    client.files.delete(uploaded.id)
                raise FineTuningUnavailableError(
                    f"OpenAI refused to create a fine-tuning job (HTTP {exc.status_code}: {_error_message(exc)}). "
                    "OpenAI stops new fine-tuning jobs on 2027-01-06 and some organisations are shut out "
                    "already; nothing was trained or changed.",
                    fix="Train an open model on this machine instead: pip install 'distillkit[local]', then "
                    "DISTILLKIT_FINE_TUNING=lora DISTILLKIT_BASE_MODEL=smollm2-135m with "
                    "DISTILLKIT_DISTILLED_BASE_URL pointing at `distillkit serve-student` (or a vLLM "
                    "server on a GPU); see the README, 'Fine-tuning providers'.",
                ) from exc
        return str(job.id)

    def find(self, token: str, *, namespace: str) -> str | None:
        """The newest job whose metadata holds this token (among the newest :attr:`FIND_LIMIT`)."""
        with internal_call():
            for seen, job in enumerate(self.client.fine_tuning.jobs.list(limit=100)):
                if seen >= self.FIND_LIMIT:
                    break
                metadata = getattr(job, "metadata", None) or {}
                if metadata.get("distillkit_token") == token[:512]:
                    return str(job.id)
        return None

    def poll(self, job_id: str) -> JobStatus:
        client = self.client
        with internal_call():
            job = client.fine_tuning.jobs.retrieve(job_id)
            progress = self._latest_event(job_id)
        error = None
        if job.error is not None and (job.error.message or job.error.code):
            error = f"{job.error.code}: {job.error.message}" if job.error.code else str(job.error.message)
        return JobStatus(
            status=job.status,
            model=job.fine_tuned_model,
            error=error,
            trained_tokens=job.trained_tokens,
            progress=progress,
        )

    def _latest_event(self, job_id: str) -> str | None:
        """The newest event's message; progress is a nicety, so failing to read it is not an error."""
        try:
            page = self.client.fine_tuning.jobs.list_events(job_id, limit=1)
        except Exception:
            return None
        return str(page.data[0].message) if page.data else None

    def cancel(self, job_id: str) -> None:
        with internal_call():
            self.client.fine_tuning.jobs.cancel(job_id)


#: How a refusal to fine-tune at all reads (as opposed to a bad request about this one job).
_REFUSAL = re.compile(
    r"fine[- ]?tun\w*.*(no longer|not (?:be )?(?:available|allowed|enabled|permitted|supported) for (?:your|this)"
    r"|disabled|shut|discontinued|unavailable)",
    re.IGNORECASE | re.DOTALL,
)


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
    return str(getattr(exc, "message", exc))[:300]


def _refuses_fine_tuning(exc: Any) -> bool:
    """Whether an error from ``fine_tuning.jobs.create`` says this account may not fine-tune at all.

    A 403 always does; a 400 / 404 only when its message says fine-tuning is unavailable (a bad
    training file or an unknown model is a failure of this job, not a wall).
    """
    status = getattr(exc, "status_code", None)
    if status == 403:
        return True
    return status in (400, 404) and _REFUSAL.search(_error_message(exc)) is not None
