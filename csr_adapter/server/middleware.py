"""Pure ASGI middleware (no per-request task overhead): bearer-token auth and a request body size limit."""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.exceptions import HTTPException

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


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
            return await send_json(send, 401, {"error": message, "error_type": "unauthorized"},
                                   [(b"www-authenticate", b"Bearer")])
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
            return await send_json(send, 413, {"error": message, "error_type": "payload_too_large"},
                                   [(b"connection", b"close")])
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
