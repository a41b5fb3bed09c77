"""A minimal HTTP/1.1 keep-alive client, so that the bench's client is never what it measures.

Measured on the 2-core box at 64 connections (the client shares the cores with the system under
test): httpx costs about 4.7 ms of CPU per request, aiohttp about 0.1 ms, an asyncio.Protocol
that sends pre-encoded requests and frames responses itself about 0.03 ms. This is the last kind.
It knows only what the bench needs: requests encoded once up front, one request in flight per
connection, responses framed by Content-Length or chunked encoding, `Connection: close` honoured.

Standard library only: the load-generating processes import it and must start fast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlsplit

__all__ = [
    "Connection",
    "Endpoint",
    "Pool",
    "ProtocolError",
    "encode_get",
    "encode_post",
    "encode_request",
    "parse_response",
]


class ProtocolError(Exception):
    """A response this client cannot frame (counted as a transport error)."""


class Endpoint:
    """Host, port and path of an http:// URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url!r}: only http://host[:port]/path URLs are supported")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.authority = parts.netloc


def encode_request(
    endpoint: Endpoint,
    method: str,
    path: str | None = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The bytes of one request (a JSON body if any), ready to be written as many times as needed;
    `path` defaults to the endpoint's."""
    lines = [f"{method} {path or endpoint.path} HTTP/1.1", f"Host: {endpoint.authority}"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [*(f"{name}: {value}" for name, value in (headers or {}).items()), "", ""]
    return "\r\n".join(lines).encode("latin-1") + (body or b"")


def encode_post(endpoint: Endpoint, body: bytes, headers: Mapping[str, str] | None = None) -> bytes:
    """The bytes of one POST with a JSON body to the endpoint's path."""
    return encode_request(endpoint, "POST", None, body, headers)


def encode_get(endpoint: Endpoint, path: str, headers: Mapping[str, str] | None = None) -> bytes:
    """The bytes of one GET of `path` on the endpoint's server."""
    return encode_request(endpoint, "GET", path, None, headers)


def parse_response(buffer: bytearray) -> tuple[int, bytes, bool, int] | None:
    """The first complete response in `buffer` as (status, body, keep-alive?, bytes used), or None
    while it is incomplete. Raises ProtocolError for what cannot be framed."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12 or not status_line[9:12].isdigit():
        raise ProtocolError(f"bad status line {status_line[:40]!r}")
    status = int(status_line[9:12])
    keep_alive = status_line.startswith(b"HTTP/1.1")
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            token = value.strip().lower()
            if token == b"close":
                keep_alive = False
            elif token == b"keep-alive":
                keep_alive = True
    start = end + 4
    if chunked:
        framed = _dechunk(buffer, start)
        if framed is None:
            return None
        body, used = framed
        return status, body, keep_alive, used
    if length is None:
        if status in (204, 304) or 100 <= status < 200:
            length = 0
        else:
            raise ProtocolError(f"HTTP {status} without Content-Length or chunked encoding")
    if len(buffer) < start + length:
        return None
    return status, bytes(buffer[start : start + length]), keep_alive, start + length


def _dechunk(buffer: bytearray, at: int) -> tuple[bytes, int] | None:
    body = bytearray()
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        try:
            size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        except ValueError:
            raise ProtocolError("bad chunk size") from None
        at = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", at - 2)
            if trailer_end < 0:
                return None
            return bytes(body), trailer_end + 4
        if len(buffer) < at + size + 2:
            return None
        body += buffer[at : at + size]
        at += size + 2


class Owner(Protocol):
    """Who hears about a connection's responses and its end."""

    def answered(self, conn: Connection, status: int, body: bytes, keep_alive: bool) -> None: ...

    def lost(self, conn: Connection, exc: BaseException | None) -> None: ...


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.sent_at = 0.0
        """perf_counter() when the request in flight was written."""
        self.busy = False
        self.open = False
        self._reason: BaseException | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.open = True

    def send(self, request: bytes) -> None:
        self.busy = True
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            try:
                parsed = parse_response(self.buffer)
            except (ProtocolError, ValueError) as exc:
                self.abort(exc if isinstance(exc, ProtocolError) else ProtocolError(str(exc)))
                return
            if parsed is None:
                return
            status, body, keep_alive, used = parsed
            del self.buffer[:used]
            self.busy = False
            self.owner.answered(self, status, body, keep_alive)
            if not keep_alive:
                self.transport.close()
                return

    def abort(self, reason: BaseException) -> None:
        """Drop the connection; the owner hears `reason` instead of a plain reset."""
        self._reason = reason
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.open = False
        self.owner.lost(self, self._reason or exc)


async def connect(endpoint: Endpoint, owner: Owner) -> Connection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Connection(owner), endpoint.host, endpoint.port)
    return conn


class Pool:
    """Request/response over keep-alive connections, opened on demand: for timed single requests
    (an open-loop sender never waits for a free connection)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.idle: list[Connection] = []
        self.waiting: dict[Connection, asyncio.Future] = {}
        self.opened = 0

    async def request(self, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
        conn = self.idle.pop() if self.idle else None
        if conn is None:
            conn = await connect(self.endpoint, self)
            self.opened += 1
        future = asyncio.get_running_loop().create_future()
        self.waiting[conn] = future
        conn.send(data)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            conn.abort(TimeoutError(f"no answer within {timeout:g}s"))
            raise

    def answered(self, conn: Connection, status: int, body: bytes, keep_alive: bool) -> None:
        future = self.waiting.pop(conn, None)
        if future is not None and not future.done():
            future.set_result((status, body))
        if keep_alive and conn.open:
            self.idle.append(conn)

    def lost(self, conn: Connection, exc: BaseException | None) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        future = self.waiting.pop(conn, None)
        if future is not None and not future.done():
            future.set_exception(ConnectionError(f"connection lost: {exc!r}" if exc else "connection closed"))

    def close(self) -> None:
        for conn in self.idle:
            conn.transport.close()
        self.idle.clear()
