"""An OpenAI-compatible HTTP server for offline tests, examples and demos.

The :class:`Simulator` speaks enough of the OpenAI REST API (chat completions, streaming,
embeddings, files, fine-tuning jobs, models) plus vLLM's runtime LoRA endpoints for the real
``openai`` SDK to talk to it over HTTP. Nothing is mocked on the client side, so a test exercises
the exact code path production uses: request building, retries, streaming, error mapping.

Everything is deterministic (answers, embeddings, ids, token counts), it needs only the standard
library, and it runs in a daemon thread on ``127.0.0.1`` on a free port::

    with Simulator() as sim:
        client = sim.client()
        reply = client.chat.completions.create(model="gpt-4.1-mini", messages=[...])

Faults (HTTP errors, latency, dropped connections, broken streams) can be injected per endpoint,
and every request is logged for assertions.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import hashlib
import json
import os
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:  # the SDK is only needed by the convenience constructors
    import openai

__all__ = [
    "BASE_MODELS",
    "AnswerFn",
    "Fault",
    "LoggedRequest",
    "Reply",
    "Simulator",
    "default_answer",
]

#: Base (teacher) models listed by ``GET /v1/models``. Chat accepts any non-``ft:`` name anyway.
BASE_MODELS: tuple[str, ...] = (
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4o-mini-2024-07-18",
    "text-embedding-3-small",
    "text-embedding-3-large",
)

_ORG = "org-distillkit-simulator"
_FINGERPRINT = "fp_distillkit_sim"
_ENDPOINTS = frozenset({"chat", "embeddings", "files", "fine_tuning", "models", "lora", "*"})
_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_NEXT_STAGE = {"validating_files": "queued", "queued": "running"}
_AUTO_HYPERPARAMETERS = {"batch_size": 1, "learning_rate_multiplier": 2.0, "n_epochs": 3}
_MIN_TRAINING_EXAMPLES = 10


@dataclass
class Reply:
    """What an answer function returns when plain text is not enough.

    Attributes:
        content: The assistant's text, or None (for a reply made only of tool calls).
        tool_calls: OpenAI-shaped tool calls, ``{"id", "type": "function", "function": {"name",
            "arguments"}}``. ``id`` and ``type`` may be left out (filled deterministically), and
            ``arguments`` may be a dict (serialised to JSON).
        finish_reason: Defaults to ``"tool_calls"`` when there are tool calls, else ``"stop"``.
    """

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None


#: An answer function: gets the parsed chat request body, returns the reply text or a :class:`Reply`.
AnswerFn = Callable[[dict[str, Any]], str | Reply]


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


@dataclass
class _Response:
    """A complete (non-streaming) HTTP response ready to be written."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _StreamResponse:
    """A Server-Sent Events response: the chunk objects, then ``[DONE]`` unless broken."""

    chunks: list[dict[str, Any]]
    break_with: Literal["error", "drop"] | None = None


@dataclass
class _Job:
    """A fine-tuning job: its public JSON object plus bookkeeping that never leaves the server."""

    data: dict[str, Any]
    stage_started: float
    events: list[dict[str, Any]] = field(default_factory=list)


class _ApiError(Exception):
    """Raised inside request handling to answer with an OpenAI-shaped error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = _error_body(message, type=type, param=param, code=code)


def _error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# --------------------------------------------------------------------------- deterministic helpers


def _text_of(content: Any) -> str:
    """Text of a message ``content``: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict) and "text" in part)
    return ""


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def _last_user_text(request: dict[str, Any]) -> str:
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _example_for_schema(schema: Any, text: str, depth: int = 0) -> Any:
    """A small value that fits a JSON schema, so ``json_schema`` replies parse as the caller expects."""
    if not isinstance(schema, dict) or depth > 8:
        return text
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _example_for_schema(schema[key][0], text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: _example_for_schema(sub, text, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return []
    if kind == "integer":
        return 0
    if kind == "number":
        return 0.0
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return text


def default_answer(request: dict[str, Any]) -> Reply:
    """The simulator's default, deterministic teacher answer.

    * With ``tools`` (and ``tool_choice`` not ``"none"``): calls the tool named by ``tool_choice``,
      or the first tool, with arguments ``{}``. Under ``"auto"`` it answers in text instead when
      the last message is already a tool result, so agent loops end.
    * With ``response_format`` ``json_object``: ``{"answer": <last user text>}``; with
      ``json_schema``: an object built from the schema's properties.
    * Otherwise: ``"Answer: <last user text>"``.

    Args:
        request: The parsed chat completion request body.

    Returns:
        The reply.
    """
    text = _last_user_text(request)
    tools = request.get("tools") or []
    tool_choice = request.get("tool_choice", "auto")
    messages = request.get("messages") or []
    last_role = messages[-1].get("role") if messages and isinstance(messages[-1], dict) else None
    if tools and tool_choice != "none":
        forced = tool_choice == "required" or isinstance(tool_choice, dict)
        if forced or last_role != "tool":
            name = None
            if isinstance(tool_choice, dict):
                name = (tool_choice.get("function") or {}).get("name")
            if name is None:
                first = tools[0] if isinstance(tools[0], dict) else {}
                name = (first.get("function") or {}).get("name") or first.get("name") or "tool"
            return Reply(tool_calls=[{"type": "function", "function": {"name": name, "arguments": "{}"}}])
    response_format = request.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_object":
            return Reply(content=json.dumps({"answer": text}))
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            value = _example_for_schema(schema, text) if schema else {"answer": text}
            if not isinstance(value, dict):
                value = {"answer": text}
            return Reply(content=json.dumps(value))
    return Reply(content=f"Answer: {text}")


def _wrong(reply: Reply) -> Reply:
    """Another answer than ``reply``, deterministic (:meth:`Simulator.student_wrong`)."""
    if reply.tool_calls:
        calls = [
            {**call, "function": {**call["function"], "arguments": json.dumps({"wrong": True})}}
            for call in reply.tool_calls
        ]
        return Reply(content=reply.content, tool_calls=calls, finish_reason=reply.finish_reason)
    content = reply.content or ""
    try:
        json.loads(content)
    except ValueError:
        words = content.split()
        return Reply(content="wrong: " + " ".join(reversed(words)), finish_reason=reply.finish_reason)
    return Reply(content=json.dumps({"wrong": content}), finish_reason=reply.finish_reason)  # still JSON


def _normalise_reply(raw: str | Reply | None, salt: str) -> Reply:
    """Turn an answer function's output into a complete :class:`Reply` (ids, JSON args, finish)."""
    reply = Reply(content=raw) if raw is None or isinstance(raw, str) else copy.deepcopy(raw)
    if not isinstance(reply, Reply):
        raise TypeError(f"answer function must return str or Reply, got {type(raw).__name__}")
    if reply.tool_calls:
        calls = []
        for i, call in enumerate(reply.tool_calls):
            function = dict(call.get("function") or {})
            arguments = function.get("arguments", "{}")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            function["arguments"] = arguments
            function.setdefault("name", "tool")
            call_id = (
                call.get("id")
                or "call_" + hashlib.sha256(f"{salt}|{i}|{function['name']}|{arguments}".encode()).hexdigest()[:24]
            )
            calls.append({"id": call_id, "type": call.get("type", "function"), "function": function})
        reply.tool_calls = calls
    else:
        reply.tool_calls = None
    if reply.finish_reason is None:
        reply.finish_reason = "tool_calls" if reply.tool_calls else "stop"
    return reply


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


def _parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """Parse a multipart/form-data body into ``{field: (filename, bytes)}``.

    Done by hand rather than with ``email`` because the file bytes must come back exactly as sent.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise _ApiError(400, "Invalid multipart body: missing boundary.")
    delimiter = b"--" + match.group(1).encode("latin-1")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        if part.startswith(b"\r\n"):
            part = part[2:]
        head, _, data = part.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        disposition = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value
        name_match = re.search(r'\bname="([^"]*)"', disposition)
        if name_match:
            file_match = re.search(r'filename="([^"]*)"', disposition)
            fields[name_match.group(1)] = (file_match.group(1) if file_match else None, data)
    return fields


def _validate_training_file(content: bytes, *, min_examples: int) -> tuple[str | None, int]:
    """Check a chat fine-tuning JSONL file the way OpenAI does before a job is queued.

    Returns:
        ``(error message or None, number of words in all messages)``.
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return "Invalid file format. The file must be UTF-8 encoded.", 0
    examples = 0
    tokens = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"Invalid file format. Line {number}: invalid JSON ({exc.msg}).", 0
        if not isinstance(example, dict):
            return f"Invalid file format. Line {number}: each line must be a JSON object.", 0
        messages = example.get("messages")
        if not isinstance(messages, list) or not messages:
            return f"Invalid file format. Line {number}: missing a non-empty 'messages' list.", 0
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return f"Invalid file format. Line {number}, message {index}: missing 'role'.", 0
            tokens += _words(_text_of(message.get("content"))) + 1
        last = messages[-1]
        if last["role"] != "assistant" or not (last.get("content") or last.get("tool_calls")):
            return (
                f"Invalid file format. Line {number}: the last message must be an assistant message "
                "with content or tool_calls.",
                0,
            )
        examples += 1
    if examples < min_examples:
        return (
            f"Training file has {examples} example(s), but must have at least {min_examples} examples.",
            0,
        )
    return None, tokens


def _page(items: list[dict[str, Any]], after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Cursor pagination: the ``limit`` items after the one whose id is ``after``."""
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return items[:limit], len(items) > limit


def _limit(query: dict[str, str], default: int = 20) -> int:
    try:
        value = int(query.get("limit", default))
    except ValueError:
        raise _ApiError(400, "Invalid 'limit': expected an integer.", param="limit") from None
    if value < 1:
        raise _ApiError(400, "Invalid 'limit': must be at least 1.", param="limit")
    return value


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not keep the process alive
    request_queue_size = 1024  # the default listen backlog (5) resets bursts of new connections
    simulator: Simulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hang up mid-stream on purpose (tests, dropped faults); that is not worth a traceback.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK reuses connections
    server_version = "distillkit-simulator/0.1"
    sys_version = ""
    disable_nagle_algorithm = True  # small writes (SSE chunks) must not wait for delayed ACKs
    timeout = 300
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.simulator._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.simulator._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr logging."""

    def do_GET(self) -> None:
        self.server.simulator._serve(self)

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def read_body(self) -> bytes:
        """Read the request body (Content-Length or chunked)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, response: _Response, request_id: str) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("x-request-id", request_id)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def send_stream(self, stream: _StreamResponse, request_id: str) -> None:
        # Chunked encoding lets the connection stay alive, and lets "drop" be told from a clean end:
        # a missing terminating chunk is a protocol error on the client side.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-request-id", request_id)
        self.end_headers()
        chunks = stream.chunks if stream.break_with is None else stream.chunks[:3]
        for chunk in chunks:
            self._write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if stream.break_with == "drop":
            self.abort()
            return
        if stream.break_with == "error":
            error = _error_body(
                "The server had an error while processing your request (simulated mid-stream failure).",
                type="server_error",
            )
            self._write_chunk(b"data: " + json.dumps(error).encode() + b"\n\n")
        else:
            self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def abort(self) -> None:
        """Close the TCP connection at once, with a reset, whatever was or was not sent."""
        self.close_connection = True
        try:
            # SO_LINGER 0 turns close() into a RST, the closest thing to a crashed server.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# --------------------------------------------------------------------------- the simulator


class Simulator:
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

    def add_model(self, name: str) -> None:
        """Register a student model name that chat will serve with ``student_answer``."""
        with self._lock:
            self._added_models.setdefault(name, int(time.time()))

    def remove_model(self, name: str) -> None:
        """Unregister a model added with :meth:`add_model` (no error if absent)."""
        with self._lock:
            self._added_models.pop(name, None)

    @property
    def lora_adapters(self) -> dict[str, str]:
        """Loaded LoRA adapters, ``{lora_name: lora_path}`` (a copy)."""
        with self._lock:
            return dict(self._lora)

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """Uploaded file objects by id (copies)."""
        with self._lock:
            return copy.deepcopy(self._files)

    def file_content(self, file_id: str) -> bytes:
        """The bytes of an uploaded file.

        Raises:
            KeyError: If there is no such file.
        """
        with self._lock:
            return self._file_bytes[file_id]

    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        """Fine-tuning job objects by id, oldest first (copies, brought up to date first)."""
        with self._lock:
            self._progress_jobs()
            return {job_id: copy.deepcopy(job.data) for job_id, job in self._jobs.items()}

    def tick(self) -> None:
        """Advance every non-terminal fine-tuning job by one stage."""
        with self._lock:
            self._progress_jobs()
            now = time.time()
            for job in self._jobs.values():
                if job.data["status"] not in _TERMINAL:
                    self._advance(job, now)

    def finish_jobs(self) -> None:
        """Run every non-terminal job to its end (hung jobs stop at ``running``)."""
        with self._lock:
            self._progress_jobs()
            now = time.time()
            for job in self._jobs.values():
                while job.data["status"] not in _TERMINAL:
                    before = job.data["status"]
                    self._advance(job, now)
                    if job.data["status"] == before:  # hung
                        break

    def fail_job(self, job_id: str, message: str = "Fine-tuning job failed (simulated).") -> None:
        """Make a non-terminal job fail now with error code ``server_error``.

        Raises:
            KeyError: If there is no such job.
            ValueError: If the job already ended.
        """
        with self._lock:
            self._progress_jobs()
            job = self._jobs[job_id]
            if job.data["status"] in _TERMINAL:
                raise ValueError(f"job {job_id} already ended with status {job.data['status']!r}")
            self._fail(job, time.time(), "server_error", message, None)

    # ------------------------------------------------------------------ request serving

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _next(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def _id(self, prefix: str, length: int = 24) -> str:
        """A deterministic id: the same sequence of calls gives the same ids in every run."""
        digest = hashlib.sha256(f"{prefix}:{self._next()}".encode()).hexdigest()
        return f"{prefix}{digest[:length]}"

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

    @staticmethod
    def _not_found(method: str, path: str) -> _ApiError:
        return _ApiError(404, f"Invalid URL ({method} {path})")

    @staticmethod
    def _json(obj: Any, status: int = 200) -> _Response:
        return _Response(status, json.dumps(obj).encode())

    # ------------------------------------------------------------------ chat

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
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        return self._json(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": i, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
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

    # ------------------------------------------------------------------ files

    def _files_route(
        self,
        method: str,
        parts: list[str],
        query: dict[str, str],
        multipart: dict[str, tuple[str | None, bytes]] | None,
    ) -> _Response:
        if not parts:
            if method == "POST":
                return self._upload(multipart)
            if method == "GET":
                with self._lock:
                    files = list(self._files.values())
                if "purpose" in query:
                    files = [f for f in files if f["purpose"] == query["purpose"]]
                files = sorted(files, key=lambda f: f["created_at"], reverse=True)
                if query.get("order") == "asc":
                    files.reverse()
                page, has_more = _page(files, query.get("after"), _limit(query, 10000))
                return self._json(
                    {
                        "object": "list",
                        "data": page,
                        "has_more": has_more,
                        "first_id": page[0]["id"] if page else None,
                        "last_id": page[-1]["id"] if page else None,
                    }
                )
            raise self._not_found(method, "/v1/files")
        file_id = parts[0]
        with self._lock:
            if file_id not in self._files:
                raise _ApiError(404, f"No such File object: {file_id}", param="id")
            if parts[1:] == [] and method == "GET":
                return self._json(self._files[file_id])
            if parts[1:] == [] and method == "DELETE":
                del self._files[file_id]
                del self._file_bytes[file_id]
                return self._json({"id": file_id, "object": "file", "deleted": True})
            if parts[1:] == ["content"] and method == "GET":
                return _Response(200, self._file_bytes[file_id], "application/octet-stream")
        raise self._not_found(method, "/v1/files/" + "/".join(parts))

    def _upload(self, multipart: dict[str, tuple[str | None, bytes]] | None) -> _Response:
        if multipart is None:
            raise _ApiError(400, "Expected a multipart/form-data body with 'file' and 'purpose'.")
        purpose = multipart.get("purpose", (None, b""))[1].decode("utf-8", "replace")
        if "file" not in multipart:
            raise _ApiError(400, "Missing required parameter: 'file'.", param="file")
        if not purpose:
            raise _ApiError(400, "Missing required parameter: 'purpose'.", param="purpose")
        if purpose != "fine-tune":
            raise _ApiError(
                400,
                f"Invalid value for 'purpose': {purpose!r}. The simulator only accepts 'fine-tune'.",
                param="purpose",
            )
        filename, content = multipart["file"]
        file_id = self._id("file-", 22)
        file_obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename or "upload",
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }
        with self._lock:
            self._files[file_id] = file_obj
            self._file_bytes[file_id] = content
        return self._json(file_obj)

    # ------------------------------------------------------------------ fine-tuning

    def _jobs_route(self, method: str, parts: list[str], query: dict[str, str], body: Any) -> _Response:
        with self._lock:
            self._progress_jobs()
            if not parts:
                if method == "POST":
                    return self._json(self._create_job(body))
                if method == "GET":
                    jobs = [job.data for job in reversed(self._jobs.values())]  # newest first
                    page, has_more = _page(jobs, query.get("after"), _limit(query))
                    return self._json({"object": "list", "data": copy.deepcopy(page), "has_more": has_more})
                raise self._not_found(method, "/v1/fine_tuning/jobs")
            job = self._jobs.get(parts[0])
            if job is None:
                raise _ApiError(404, f"Could not find fine-tune job: {parts[0]}.", param="fine_tune_id")
            if len(parts) == 1 and method == "GET":
                return self._json(job.data)
            if parts[1:] == ["cancel"] and method == "POST":
                if job.data["status"] in _TERMINAL:
                    raise _ApiError(400, f"Job has already {job.data['status']}: {parts[0]}.", param=None)
                job.data["status"] = "cancelled"
                self._event(job, time.time(), "Fine-tuning job cancelled")
                return self._json(job.data)
            if parts[1:] == ["events"] and method == "GET":
                events = list(reversed(job.events))
                page, has_more = _page(events, query.get("after"), _limit(query))
                return self._json({"object": "list", "data": copy.deepcopy(page), "has_more": has_more})
        raise self._not_found(method, "/v1/fine_tuning/jobs/" + "/".join(parts))

    def _create_job(self, body: Any) -> dict[str, Any]:
        """Create a job (lock held)."""
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _ApiError(400, "Missing required parameter: 'model'.", param="model")
        known = any(job.data["fine_tuned_model"] == model for job in self._jobs.values())
        if model.startswith("ft:") and not known and model not in self._added_models:
            raise _ApiError(
                400,
                f"Model {model} is not available for fine-tuning or does not exist.",
                param="model",
                code="model_not_available",
            )
        training_file = body.get("training_file")
        if not isinstance(training_file, str) or not training_file:
            raise _ApiError(400, "Missing required parameter: 'training_file'.", param="training_file")
        if training_file not in self._files:
            raise _ApiError(400, f"invalid training_file: {training_file}", param="training_file")
        validation_file = body.get("validation_file")
        if validation_file is not None and validation_file not in self._files:
            raise _ApiError(400, f"invalid validation_file: {validation_file}", param="validation_file")
        method = body.get("method") if isinstance(body.get("method"), dict) else None
        hyper = dict(body.get("hyperparameters") or {})
        if method and isinstance(method.get("supervised"), dict):
            hyper.update(method["supervised"].get("hyperparameters") or {})
        hyperparameters = {key: hyper.get(key, "auto") for key in _AUTO_HYPERPARAMETERS}
        now = time.time()
        job_id = self._id("ftjob-")
        seed = body.get("seed")
        if not isinstance(seed, int):
            seed = int(hashlib.sha256(job_id.encode()).hexdigest()[:8], 16) % 2**31
        data: dict[str, Any] = {
            "id": job_id,
            "object": "fine_tuning.job",
            "created_at": int(now),
            "error": None,
            "fine_tuned_model": None,
            "finished_at": None,
            "hyperparameters": hyperparameters,
            "model": model,
            "organization_id": _ORG,
            "result_files": [],
            "seed": seed,
            "status": "validating_files",
            "trained_tokens": None,
            "training_file": training_file,
            "validation_file": validation_file,
            "integrations": body.get("integrations"),
            "estimated_finish": None,
            "metadata": body.get("metadata"),
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            "user_provided_suffix": body.get("suffix"),
        }
        job = _Job(data=data, stage_started=now)
        self._jobs[job_id] = job
        self._event(job, now, f"Validating training file: {training_file}")
        return copy.deepcopy(data)

    def _event(
        self,
        job: _Job,
        now: float,
        message: str,
        *,
        level: str = "info",
        kind: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        job.events.append(
            {
                "id": self._id("ftevent-"),
                "object": "fine_tuning.job.event",
                "created_at": int(now),
                "level": level,
                "message": message,
                "data": data or {},
                "type": kind,
            }
        )

    def _progress_jobs(self) -> None:
        """Apply the time-based progress that is due (lock held); lazy, so no timer thread needed."""
        step = self.job_step_seconds
        if step is None:
            return
        now = time.time()
        for job in self._jobs.values():
            while job.data["status"] not in _TERMINAL and now - job.stage_started >= step:
                before = job.data["status"]
                # Stages are timed from when the previous one began, not from this read.
                self._advance(job, job.stage_started + step)
                if job.data["status"] == before:  # hung
                    break

    def _advance(self, job: _Job, now: float) -> None:
        """Move a non-terminal job one stage forward (lock held)."""
        data = job.data
        status = data["status"]
        if status == "validating_files":
            content = self._file_bytes.get(data["training_file"])
            error, _ = _validate_training_file(content or b"", min_examples=_MIN_TRAINING_EXAMPLES)
            if content is None:
                error = f"Training file {data['training_file']} was deleted."
            if error is not None:
                self._fail(job, now, "invalid_training_file", error, "training_file")
                return
            if data["validation_file"] is not None:
                content = self._file_bytes.get(data["validation_file"], b"")
                error, _ = _validate_training_file(content, min_examples=1)
                if error is not None:
                    self._fail(job, now, "invalid_validation_file", error, "validation_file")
                    return
            self._event(job, now, "Files validated, moving job to queued state")
        elif status == "queued":
            hyper = data["hyperparameters"]
            for key, value in _AUTO_HYPERPARAMETERS.items():
                if hyper.get(key) in (None, "auto"):
                    hyper[key] = value
            self._event(job, now, "Fine-tuning job started")
        elif status == "running":
            if self.hang_jobs:
                return
            if self.fail_jobs:
                self._fail(job, now, "server_error", "Fine-tuning job failed (simulated).", None)
                return
            self._succeed(job, now)
            return
        data["status"] = _NEXT_STAGE[status]
        job.stage_started = now

    def _succeed(self, job: _Job, now: float) -> None:
        data = job.data
        _, tokens = _validate_training_file(self._file_bytes.get(data["training_file"], b""), min_examples=0)
        epochs = data["hyperparameters"].get("n_epochs")
        epochs = epochs if isinstance(epochs, int) else _AUTO_HYPERPARAMETERS["n_epochs"]
        for step in range(1, 4):  # a few metrics events, like the real training log
            loss = round(1.0 / (step + 1), 4)
            self._event(
                job,
                now,
                f"Step {step}/3: training loss={loss}",
                kind="metrics",
                data={"step": step, "train_loss": loss, "total_steps": 3},
            )
        base = data["model"].split(":")[1] if data["model"].startswith("ft:") else data["model"]
        suffix = data.get("user_provided_suffix") or ""
        data["fine_tuned_model"] = f"ft:{base}:distillkit:{suffix}:{data['id'][-8:]}"
        data["trained_tokens"] = tokens * epochs
        data["finished_at"] = int(now)
        data["status"] = "succeeded"
        job.stage_started = now
        self._event(job, now, f"New fine-tuned model created: {data['fine_tuned_model']}")
        self._event(job, now, "The job has successfully completed")

    def _fail(self, job: _Job, now: float, code: str, message: str, param: str | None) -> None:
        job.data["status"] = "failed"
        job.data["error"] = {"code": code, "message": message, "param": param}
        job.data["finished_at"] = int(now)
        job.stage_started = now
        self._event(job, now, f"The job failed: {message}", level="error")

    # ------------------------------------------------------------------ models and LoRA

    def _model_objects(self) -> list[dict[str, Any]]:
        with self._lock:
            self._progress_jobs()
            models = [
                {"id": name, "object": "model", "created": 1700000000, "owned_by": "system"} for name in BASE_MODELS
            ]
            for job in self._jobs.values():
                if job.data["fine_tuned_model"]:
                    models.append(
                        {
                            "id": job.data["fine_tuned_model"],
                            "object": "model",
                            "created": job.data["finished_at"],
                            "owned_by": _ORG,
                        }
                    )
            for name, created in self._added_models.items():
                models.append({"id": name, "object": "model", "created": created, "owned_by": _ORG})
            for name, path in self._lora.items():
                models.append({"id": name, "object": "model", "created": 1700000000, "owned_by": "vllm", "root": path})
        return models

    def _list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": self._model_objects()}

    def _get_model(self, model_id: str) -> dict[str, Any]:
        for model in self._model_objects():
            if model["id"] == model_id:
                return model
        raise _ApiError(
            404,
            f"The model `{model_id}` does not exist or you do not have access to it.",
            code="model_not_found",
        )

    def _load_lora(self, body: Any) -> _Response:
        if not isinstance(body, dict) or not body.get("lora_name") or not body.get("lora_path"):
            raise _ApiError(400, "Both 'lora_name' and 'lora_path' must be provided.")
        name = str(body["lora_name"])
        path = str(body["lora_path"])
        if not os.path.isfile(os.path.join(path, "adapter_config.json")):
            # vLLM reads the adapter when it loads it: a path it cannot read is refused.
            raise _ApiError(400, f"Loading lora {name} failed: No adapter found for {path}", param="lora_path")
        with self._lock:
            if name in self._lora:
                raise _ApiError(400, f"The lora adapter '{name}' has already been loaded.", param="lora_name")
            self._lora[name] = path
        return _Response(200, f"Success: LoRA adapter '{name}' added successfully.".encode(), "text/plain")

    def _unload_lora(self, body: Any) -> _Response:
        if not isinstance(body, dict) or not body.get("lora_name"):
            raise _ApiError(400, "'lora_name' must be provided.", param="lora_name")
        name = str(body["lora_name"])
        with self._lock:
            if name not in self._lora:
                raise _ApiError(404, f"The lora adapter '{name}' cannot be found.", param="lora_name")
            del self._lora[name]
        return _Response(200, f"Success: LoRA adapter '{name}' removed successfully.".encode(), "text/plain")
