"""Structured JSON errors: ``{"error": message, "error_type": type}`` with the right status, never a traceback.

422 for bad input (invalid JSON, wrong types, empty texts, lone surrogates, k > h, bad filter), 413 for
too much of it, 408 for a body not sent in time, 421 for a Host not allowed, 401 for a missing/wrong API
key, 404 for an unknown route or collection, 503 when overloaded or not ready. Anything unexpected is
logged server-side and answered with a bare 500 message.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("csr_adapter.server")

ERROR_TYPES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               408: "request_timeout", 413: "payload_too_large", 415: "unsupported_media_type",
               421: "misdirected", 422: "validation", 503: "overloaded"}


class ApiError(Exception):
    """An error answered as JSON with ``status`` and ``error_type``."""

    def __init__(self, status: int, message: str, error_type: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or ERROR_TYPES.get(status, "error")
        self.headers = headers


def _safe(text: str) -> str:
    """``text`` with lone surrogates escaped (``\\ud800``), so the JSON body always encodes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(status: int, message: str, error_type: str | None = None, detail: list | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": _safe(message), "error_type": error_type or ERROR_TYPES.get(status, "error")}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def _clean(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors without the offending input (may be large, binary or not JSON-serialisable)."""
    return [{"loc": [p if isinstance(p, int) else _safe(str(p)) for p in e.get("loc", ())],
             "msg": _safe(str(e.get("msg", ""))), "type": str(e.get("type", ""))} for e in errors]


_UNION_TAGS = {"str", "int", "float", "bool", "list[str]", "list[union[str,int,float,bool]]"}


def _validation_message(detail: list[dict[str, Any]]) -> str:
    if not detail:
        return "invalid request"
    first = detail[0]
    if first["type"] == "json_invalid":
        return "request body is not valid JSON"
    where = ".".join(str(p) for p in first["loc"] if p != "body" and str(p) not in _UNION_TAGS) or "body"
    more = f" (and {len(detail) - 1} more)" if len(detail) > 1 else ""
    msg = first["msg"].removeprefix("Value error, ")  # pydantic's prefix on a validator's ValueError
    return f"{where}: {msg}{more}"


def install(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app``."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.error_type, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _clean(list(exc.errors()))
        message = _validation_message(detail)
        if "json" not in request.headers.get("content-type", "json"):  # e.g. curl -d without -H
            message = "request body must be JSON sent with 'Content-Type: application/json'"
        return error_response(422, message, "validation", detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if status == 400 and "parsing the body" in message:  # unreadable body: bad input, like bad JSON
            status, message = 422, "request body could not be parsed"
        return error_response(status, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", exc)
        return error_response(500, "internal server error (see the server log)", "internal")
