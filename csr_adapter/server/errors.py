"""Structured JSON errors with the right status, never a traceback.

The body is text-embeddings-inference's ``{"error": message, "error_type": type}`` (OpenAI's
``{"error": {"message", "type", "param", "code"}}`` under ``/v1/``, with TEI's flat ``message``, ``code``,
``type`` and ``error_type`` beside it), and ``error_type`` uses TEI's names
and casing: ``Validation`` (413 too many / too long inputs, 422 malformed requests), ``Empty`` (400),
``Overloaded`` (429, with ``Retry-After``), ``Unhealthy`` (503), ``Tokenizer`` (422), ``Backend``.
Situations TEI has no name for keep one in the same casing: ``Unauthorized`` (401), ``NotFound`` (404),
``MethodNotAllowed`` (405), ``RequestTimeout`` (408), ``Misdirected`` (421, Host not allowed),
``NoCollection`` / ``BackendUnavailable`` (503, ``/search``), ``Internal`` (500: logged server-side,
answered with a bare message).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .middleware import error_body

log = logging.getLogger("csr_adapter.server")

ERROR_TYPES = {400: "Validation", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed",
               408: "RequestTimeout", 413: "Validation", 415: "Validation", 421: "Misdirected", 422: "Validation",
               424: "Backend", 429: "Overloaded", 500: "Internal", 503: "Unhealthy"}


class ApiError(Exception):
    """An error answered as JSON with ``status`` and ``error_type``."""

    def __init__(self, status: int, message: str, error_type: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or ERROR_TYPES.get(status, "Internal")
        self.headers = headers


def _safe(text: str) -> str:
    """``text`` with lone surrogates escaped (``\\ud800``), so the JSON body always encodes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(status: int, message: str, error_type: str | None = None, detail: list | None = None,
                   headers: dict[str, str] | None = None, path: str = "") -> JSONResponse:
    body = error_body(path, status, _safe(message), error_type or ERROR_TYPES.get(status, "Internal"))
    if detail is not None and "error_type" in body:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def _clean(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors without the offending input (may be large, binary or not JSON-serialisable)."""
    return [{"loc": [p if isinstance(p, int) else _safe(str(p)) for p in e.get("loc", ())],
             "msg": _safe(str(e.get("msg", ""))), "type": str(e.get("type", ""))} for e in errors]


_UNION_TAGS = {"str", "int", "float", "bool", "list[str]", "list[union[str,int,float,bool]]"}


def _loc_part(part: Any) -> str:
    """One step of an error's location; a key with a line break or other unprintable character is quoted
    (``'\\n'``), so the message stays one line."""
    text = str(part)
    return text if text.isprintable() else repr(text)


def _validation_message(detail: list[dict[str, Any]]) -> str:
    if not detail:
        return "invalid request"
    first = detail[0]
    if first["type"] == "json_invalid":
        return "request body is not valid JSON"
    where = ".".join(_loc_part(p) for p in first["loc"] if p != "body" and str(p) not in _UNION_TAGS) or "body"
    more = f" (and {len(detail) - 1} more)" if len(detail) > 1 else ""
    msg = first["msg"].removeprefix("Value error, ")  # pydantic's prefix on a validator's ValueError
    return f"{where}: {msg}{more}"


def install(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app``."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.error_type, headers=exc.headers, path=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _clean(list(exc.errors()))
        message = _validation_message(detail)
        if "json" not in request.headers.get("content-type", "json"):  # e.g. curl -d without -H
            message = "request body must be JSON sent with 'Content-Type: application/json'"
        return error_response(422, message, "Validation", detail, path=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if status == 400 and "parsing the body" in message:  # unreadable body: bad input, like bad JSON
            status, message = 422, "request body could not be parsed"
        return error_response(status, message, headers=getattr(exc, "headers", None), path=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", exc)
        return error_response(500, "internal server error (see the server log)", "Internal", path=request.url.path)
