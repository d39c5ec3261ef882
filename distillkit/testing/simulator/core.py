"""The :class:`Simulator`: serving, the request log, and routing to the endpoint groups."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from distillkit.testing.simulator.answers import AnswerFn, default_answer
from distillkit.testing.simulator.chat import _Chat
from distillkit.testing.simulator.faults import Fault
from distillkit.testing.simulator.fine_tuning import _Job
from distillkit.testing.simulator.http import (
    _ApiError,
    _error_body,
    _Handler,
    _parse_multipart,
    _Response,
    _Server,
    _StreamResponse,
)

if TYPE_CHECKING:  # the SDK is only needed by the convenience constructors
    import openai

__all__ = ["LoggedRequest", "Simulator"]


@dataclass
class LoggedRequest:
    """One request the simulator received, for assertions.

    Attributes:
        method: HTTP method, e.g. ``"POST"``.
        path: URL path without the query string, e.g. ``"/v1/chat/completions"``.
        query: Query parameters (last value wins).
        headers: Request headers with lower-case names.
        body: Parsed JSON body; for a multipart upload ``{"purpose", "filename"}``; else None.
        status: HTTP status sent back; None while in flight or when the connection was dropped.
        time: ``time.time()`` when the request arrived.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int | None
    time: float


class Simulator(_Chat):
    """An OpenAI-compatible server on ``127.0.0.1`` for offline tests, examples and demos.

    Use it as a context manager (or call :meth:`start` / :meth:`stop`)::

        with Simulator(job_step_seconds=0.05) as sim:
            client = sim.client()
            client.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}])
            assert sim.chat_requests()[0]["model"] == "gpt-4.1-mini"

    Teacher models (any name not starting with ``ft:``) are answered by ``answer``. Student models
    (``ft:`` models of succeeded jobs, models added with :meth:`add_model`, loaded LoRA adapters)
    are answered by ``student_answer``, which defaults to ``answer``. Tests tell them apart by
    ``response.model``.

    Args:
        answer: Teacher answer function; defaults to :func:`default_answer`.
        student_answer: Answer function for fine-tuned / added / LoRA models; None means ``answer``.
        job_step_seconds: How long each fine-tuning stage lasts in real time; None means jobs move
            only through :meth:`tick` and :meth:`finish_jobs`.
        fail_jobs: Jobs that reach the end of ``running`` fail with ``server_error``.
        hang_jobs: Jobs stay ``running`` forever.
        embedding_dimensions: Default embedding size when a request gives no ``dimensions``.
        port: TCP port; 0 picks a free one.
    """

    def __init__(
        self,
        *,
        answer: AnswerFn | None = None,
        student_answer: AnswerFn | None = None,
        job_step_seconds: float | None = None,
        fail_jobs: bool = False,
        hang_jobs: bool = False,
        embedding_dimensions: int = 64,
        port: int = 0,
    ) -> None:
        self.answer: AnswerFn = answer or default_answer
        self.student_answer: AnswerFn | None = student_answer
        self.job_step_seconds = job_step_seconds
        self.fail_jobs = fail_jobs
        #: When set, creating a fine-tuning job fails with HTTP 403 and this message, as OpenAI
        #: answers organisations it no longer lets fine-tune (see :data:`FINE_TUNING_REFUSAL`).
        self.refuse_fine_tuning: str | None = None
        self.hang_jobs = hang_jobs
        self.embedding_dimensions = embedding_dimensions
        self._port = port
        # One lock guards all mutable state below; handler threads and the test thread share it.
        self._lock = threading.RLock()
        self._counter = 0
        self._log: list[LoggedRequest] = []
        self._faults: list[Fault] = []
        self._files: dict[str, dict[str, Any]] = {}
        self._file_bytes: dict[str, bytes] = {}
        self._jobs: dict[str, _Job] = {}
        self._added_models: dict[str, int] = {}
        self._wrong: list[tuple[Callable[[dict[str, Any]], bool], float, str | None]] = []
        self._lora: dict[str, str] = {}
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Simulator:
        """Start serving in a background daemon thread (no-op if already started).

        Returns:
            The simulator itself, for chaining.
        """
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.simulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="distillkit-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (no-op if not started)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # wake handler threads blocked on idle keep-alive reads
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port the server listens on (the simulator must be started)."""
        if self._server is None:
            raise RuntimeError("Simulator is not started; use `with Simulator() as sim:` or sim.start().")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, for ``openai.OpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, **kwargs: Any) -> openai.OpenAI:
        """An ``openai.OpenAI`` client for this simulator (``max_retries=0`` unless overridden).

        Args:
            **kwargs: Passed to ``openai.OpenAI``; they override the defaults.
        """
        import openai

        options: dict[str, Any] = {"base_url": self.base_url, "api_key": "sk-simulator", "max_retries": 0}
        options.update(kwargs)
        return openai.OpenAI(**options)

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` client for this simulator (``max_retries=0`` unless overridden).

        Args:
            **kwargs: Passed to ``openai.AsyncOpenAI``; they override the defaults.
        """
        import openai

        options: dict[str, Any] = {"base_url": self.base_url, "api_key": "sk-simulator", "max_retries": 0}
        options.update(kwargs)
        return openai.AsyncOpenAI(**options)

    # ------------------------------------------------------------------ public state and controls

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request received so far, oldest first (a copy of the list)."""
        with self._lock:
            return list(self._log)

    def chat_requests(self, model: str | None = None) -> list[dict[str, Any]]:
        """Bodies of the logged chat completion requests, optionally only those for ``model``."""
        with self._lock:
            return [
                r.body
                for r in self._log
                if r.path == "/v1/chat/completions"
                and isinstance(r.body, dict)
                and (model is None or r.body.get("model") == model)
            ]

    def reset_log(self) -> None:
        """Forget the logged requests."""
        with self._lock:
            self._log.clear()

    def _serve(self, handler: _Handler) -> None:
        """Handle one HTTP request: log it, apply faults, route it, write the response."""
        arrived = time.time()
        url = urlsplit(handler.path)
        path = unquote(url.path)
        query = dict(parse_qsl(url.query))
        headers = {k.lower(): v for k, v in handler.headers.items()}
        raw = handler.read_body()
        content_type = headers.get("content-type", "")
        body: Any = None
        multipart: dict[str, tuple[str | None, bytes]] | None = None
        parse_error: _ApiError | None = None
        try:
            if content_type.startswith("multipart/form-data"):
                multipart = _parse_multipart(raw, content_type)
                body = {
                    "purpose": multipart.get("purpose", (None, b""))[1].decode("utf-8", "replace"),
                    "filename": multipart.get("file", (None, b""))[0],
                }
            elif raw.strip():
                body = json.loads(raw)
        except _ApiError as exc:
            parse_error = exc
        except (json.JSONDecodeError, UnicodeDecodeError):
            parse_error = _ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                "using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            )
        entry = LoggedRequest(handler.command, path, query, headers, body, None, arrived)
        with self._lock:
            self._log.append(entry)  # logged before answering, so a test never sees it missing
        request_id = "req_" + uuid.UUID(int=self._next()).hex

        endpoint = self._endpoint_key(path)
        model = body.get("model") if isinstance(body, dict) else None
        streaming = endpoint == "chat" and isinstance(body, dict) and body.get("stream") is True
        fault = self._take_fault(endpoint, model, streaming)
        if fault is not None:
            if fault.latency > 0:
                time.sleep(fault.latency)
            if fault.drop:
                handler.abort()
                return
            if fault.status is not None or fault.body is not None:
                response = self._fault_response(fault)
                entry.status = response.status
                handler.send(response, request_id)
                return

        result: _Response | _StreamResponse
        try:
            if parse_error is not None:
                raise parse_error
            result = self._route(handler.command, path, query, body, multipart)
        except _ApiError as exc:
            result = _Response(exc.status, json.dumps(exc.body).encode())
        except Exception as exc:  # a bug or a raising answer function: tell the client why
            result = _Response(500, json.dumps(_error_body(f"Simulator error: {exc!r}", type="server_error")).encode())
        if isinstance(result, _StreamResponse):
            if fault is not None and fault.mid_stream is not None:
                result.break_with = fault.mid_stream
            entry.status = 200
            handler.send_stream(result, request_id)
        else:
            entry.status = result.status
            handler.send(result, request_id)

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: Any,
        multipart: dict[str, tuple[str | None, bytes]] | None,
    ) -> _Response | _StreamResponse:
        parts = path.strip("/").split("/")
        if parts[:1] != ["v1"]:
            raise self._not_found(method, path)
        parts = parts[1:]
        if method == "POST" and parts == ["chat", "completions"]:
            return self._chat(body)
        if method == "POST" and parts == ["embeddings"]:
            return self._embeddings(body)
        if parts[:1] == ["files"]:
            return self._files_route(method, parts[1:], query, multipart)
        if parts[:2] == ["fine_tuning", "jobs"]:
            return self._jobs_route(method, parts[2:], query, body)
        if method == "GET" and parts[:1] == ["models"]:
            if len(parts) == 1:
                return self._json(self._list_models())
            return self._json(self._get_model("/".join(parts[1:])))
        if method == "POST" and parts == ["load_lora_adapter"]:
            return self._load_lora(body)
        if method == "POST" and parts == ["unload_lora_adapter"]:
            return self._unload_lora(body)
        raise self._not_found(method, path)
