"""JSON responses and errors shared by both gateways.

Every error a gateway answers is: ``{"error": {"code": "...", "message": "..."}}``.

Handlers turn our own ``ApiError``, authentication failures, Starlette's
``HTTPException`` (unknown route, wrong method, body too large) and anything
unexpected into that one shape, so a client never parses two error formats.
"""

from __future__ import annotations

import http
import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.auth import AuthError
from infra.rate_limits import RateLimited

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """A request the gateway refuses, with a stable machine code and a fitting status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def path_with_query(request: Request) -> str:
    """The path and query as the client sent them (and signed them)."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    query = request.scope.get("query_string", b"")
    whole = raw + b"?" + query if query else raw
    return bytes(whole).decode("utf-8", "replace")


def bad_request(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message)


async def auth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def rate_limited(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RateLimited)
    headers = {"Retry-After": str(exc.retry_after)}
    return error_response(429, "rate_limited", str(exc), headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = _HTTP_CODES.get(status) or http.HTTPStatus(status).phrase.lower().replace(" ", "_")
    message = {404: f"no such endpoint: {request.url.path}"}.get(status, exc.detail)
    if status == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return error_response(status, code, message, dict(exc.headers or {}))


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "the server failed to answer this request")


EXCEPTION_HANDLERS = {
    ApiError: api_error,
    AuthError: auth_error,
    RateLimited: rate_limited,
    HTTPException: http_error,
    Exception: internal_error,
}


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with the API's own 413.

    (Starlette's ``max_body_size`` answers plain text.) A declared
    ``Content-Length`` over the limit is refused before reading; otherwise the
    body is counted as it arrives and reading past the limit raises ``ApiError``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = ApiError(413, "body_too_large", f"the body is over {self.max_bytes} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = error_response(413, too_large.code, too_large.message)
                await response(scope, receive, send)
                return
        total = 0

        async def limited() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, limited, send)
