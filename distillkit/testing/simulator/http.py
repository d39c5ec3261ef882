"""The HTTP side of the simulator: responses, errors, the threaded server and its handler, and the
state every endpoint group shares (one lock, deterministic ids).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from distillkit.testing.simulator.core import Simulator

_ORG = "org-distillkit-simulator"


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


class _Endpoints:
    """What every endpoint group shares: one lock over all mutable state, deterministic ids."""

    _lock: threading.RLock
    _counter: int
    _connections: set[socket.socket]

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

    @staticmethod
    def _not_found(method: str, path: str) -> _ApiError:
        return _ApiError(404, f"Invalid URL ({method} {path})")

    @staticmethod
    def _json(obj: Any, status: int = 200) -> _Response:
        return _Response(status, json.dumps(obj).encode())
