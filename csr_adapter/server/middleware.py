"""Pure ASGI middleware (no per-request task overhead): Host check, bearer-token auth, body size and time limits."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.exceptions import HTTPException

from .config import DEFAULT_HOSTS

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


OPENAI_PREFIX = "/v1/"  # routes that answer errors in OpenAI's shape


def error_body(path: str, status: int, message: str, error_type: str) -> dict[str, Any]:
    """An error as TEI answers it, ``{"error": message, "error_type": type}``, or under ``/v1/`` as OpenAI
    does, ``{"error": {"message", "type", "param", "code"}}`` (``code``: the HTTP status), with TEI's
    ``OpenAICompatErrorResponse`` fields beside it: ``message``, ``code``, ``error_type`` (its OpenAPI) and
    ``type`` (the key TEI's server writes it under)."""
    if path.startswith(OPENAI_PREFIX):
        return {"error": {"message": message, "type": error_type, "param": None, "code": status},
                "message": message, "code": status, "type": error_type, "error_type": error_type}
    return {"error": message, "error_type": error_type}


async def send_error(scope: Scope, send, status: int, message: str, error_type: str,
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send_json(send, status, error_body(scope.get("path", ""), status, message, error_type), headers)


async def send_json(send, status: int, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


class BearerAuth:
    """Require ``Authorization: Bearer <api_key>`` on every HTTP path except ``open_paths``."""

    def __init__(self, app: ASGIApp, api_key: str, open_paths: Iterable[str] = ("/health",)) -> None:
        self.app = app
        self.expected = b"Bearer " + api_key.encode()
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        given = _header(scope, b"authorization") or b""
        if not secrets.compare_digest(given, self.expected):
            message = "missing or invalid API key: send 'Authorization: Bearer <key>'"
            return await send_error(scope, send, 401, message, "Unauthorized", [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


class BodyLimit:
    """Answer 413 when a request body exceeds ``max_bytes`` (by Content-Length, or while streaming it)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            message = f"request body larger than {self.max_bytes} bytes"
            return await send_error(scope, send, 413, message, "Validation", [(b"connection", b"close")])
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # chunked upload: FastAPI re-raises HTTPException as is
                    raise HTTPException(413, f"request body larger than {self.max_bytes} bytes")
            return message

        return await self.app(scope, limited_receive, send)



def normalize_host(host: str) -> str:
    """A host name as compared: lower case, no trailing dot, IPv6 in brackets (``::1`` -> ``[::1]``)."""
    host = host.strip().lower().rstrip(".")
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def host_of(header: bytes) -> str:
    """The host part of a ``Host`` header (port dropped): ``[::1]:8080`` -> ``[::1]``."""
    value = header.decode("latin-1").strip().lower()
    if value.startswith("["):
        return value[:value.find("]") + 1] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return normalize_host(value)


class HostCheck:
    """Answer 421 unless the ``Host`` header names an allowed host (DNS-rebinding guard); ``*`` allows any.

    A request without ``Host`` (HTTP/1.0) passes: browsers always send one.
    """

    def __init__(self, app: ASGIApp, allowed: Iterable[str] = DEFAULT_HOSTS) -> None:
        self.app = app
        allowed = list(allowed)
        self.any = "*" in allowed
        self.allowed = frozenset(normalize_host(h) for h in allowed if h != "*")

    async def __call__(self, scope: Scope, receive, send) -> None:
        if self.any or scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        header = _header(scope, b"host")
        if header is not None and host_of(header) not in self.allowed:
            shown = header.decode("latin-1")[:100].encode("ascii", "backslashreplace").decode()
            message = f"host {shown!r} is not allowed: start the server with --allowed-host NAME"
            return await send_error(scope, send, 421, message, "Misdirected", [(b"connection", b"close")])
        return await self.app(scope, receive, send)


class BodyTimeout:
    """Answer 408 when the request body is not fully received within ``timeout_s`` of starting to read it."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        done = False

        async def timed_receive() -> dict:
            nonlocal deadline, done
            if done:  # body complete: later receives wait for a disconnect, unbounded
                return await receive()
            if deadline is None:
                deadline = loop.time() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"request body not received within {self.timeout_s:g}s",
                                    headers={"Connection": "close"}) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        return await self.app(scope, timed_receive, send)
