"""Injected faults: HTTP errors, latency, dropped connections and broken streams, per endpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from distillkit.testing.simulator.http import _Endpoints, _error_body, _Response

_ENDPOINTS = frozenset({"chat", "embeddings", "files", "fine_tuning", "models", "lora", "*"})


@dataclass
class Fault:
    """An injected fault; see :meth:`Simulator.inject`.

    Attributes:
        endpoint: Endpoint key it applies to (``"chat"``, ``"embeddings"``, ..., or ``"*"``).
        status: HTTP status to answer with, or None.
        times: Matching requests it still applies to; None means until cleared.
        latency: Seconds to sleep before answering.
        drop: Close the connection without any response.
        mid_stream: ``"error"`` or ``"drop"`` to break a streaming chat response after two chunks.
        model: Only requests for this model match, or None for all.
        headers: Extra response headers for a ``status`` fault.
        body: Response body to send instead of the normal one (dict as JSON, str/bytes as is).
        hits: How many requests it has applied to so far.
    """

    endpoint: str
    status: int | None = None
    times: int | None = 1
    latency: float = 0.0
    drop: bool = False
    mid_stream: Literal["error", "drop"] | None = None
    model: str | None = None
    headers: dict[str, str] | None = None
    body: Any = None
    hits: int = 0


class _Faults(_Endpoints):
    """:meth:`inject` / :meth:`clear_faults`, and the matching of faults to requests."""

    _faults: list[Fault]

    def inject(
        self,
        endpoint: str,
        *,
        status: int | None = None,
        times: int | None = 1,
        latency: float = 0.0,
        drop: bool = False,
        mid_stream: Literal["error", "drop"] | None = None,
        model: str | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> Fault:
        """Make the next matching requests misbehave.

        Faults are consumed in the order they were injected: a request takes the first one that
        matches its endpoint (and model) and still has uses left.

        Args:
            endpoint: ``"chat"``, ``"embeddings"``, ``"files"``, ``"fine_tuning"``, ``"models"``,
                ``"lora"`` or ``"*"`` (any request, unknown routes included).
            status: Answer with this HTTP status and an OpenAI error body (429 is a rate limit,
                5xx a server error). A ``retry-after-ms: 10`` header keeps SDK retries quick.
            times: How many matching requests it applies to; None means until :meth:`clear_faults`.
            latency: Seconds to sleep before answering; alone, it only slows requests down.
            drop: Close the connection without sending any response.
            mid_stream: For streaming chat requests only: after two chunks, send an SSE error event
                (``"error"``) or reset the connection (``"drop"``).
            model: Only requests for this model (chat / embeddings) match.
            headers: Response headers for a ``status`` fault, overriding the defaults.
            body: Response body instead of the normal one (dict as JSON, str/bytes as is); sent with
                ``status``, or 200 when ``status`` is None.

        Returns:
            The :class:`Fault`, whose ``hits`` counts the requests it applied to.

        Raises:
            ValueError: On an unknown endpoint key or ``mid_stream`` value.
        """
        if endpoint not in _ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {sorted(_ENDPOINTS)}")
        if mid_stream not in (None, "error", "drop"):
            raise ValueError(f"mid_stream must be None, 'error' or 'drop', not {mid_stream!r}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for unlimited")
        fault = Fault(endpoint, status, times, latency, drop, mid_stream, model, headers, body)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self._faults.clear()

    @staticmethod
    def _endpoint_key(path: str) -> str | None:
        if path == "/v1/chat/completions":
            return "chat"
        if path == "/v1/embeddings":
            return "embeddings"
        if path == "/v1/files" or path.startswith("/v1/files/"):
            return "files"
        if path.startswith("/v1/fine_tuning/"):
            return "fine_tuning"
        if path == "/v1/models" or path.startswith("/v1/models/"):
            return "models"
        if path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
            return "lora"
        return None

    def _take_fault(self, endpoint: str | None, model: Any, streaming: bool) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.endpoint != "*" and fault.endpoint != endpoint:
                    continue
                if fault.model is not None and fault.model != model:
                    continue
                if fault.mid_stream is not None and not streaming:
                    continue
                fault.hits += 1
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_response(fault: Fault) -> _Response:
        status = fault.status if fault.status is not None else 200
        headers = {"retry-after-ms": "10"} if status >= 400 else {}
        headers.update(fault.headers or {})
        if fault.body is not None:
            if isinstance(fault.body, bytes):
                payload = fault.body
            elif isinstance(fault.body, str):
                payload = fault.body.encode()
            else:
                payload = json.dumps(fault.body).encode()
            return _Response(status, payload, headers=headers)
        if status == 429:
            error = _error_body(
                "Rate limit reached (simulated). Please try again later.",
                type="rate_limit_exceeded",
                code="rate_limit_exceeded",
            )
        elif status == 503:
            error = _error_body("The engine is currently overloaded (simulated).", type="server_error")
        elif status >= 500:
            error = _error_body(
                "The server had an error while processing your request (simulated).", type="server_error"
            )
        else:
            error = _error_body(f"Simulated error with status {status}.")
        return _Response(status, json.dumps(error).encode(), headers=headers)
