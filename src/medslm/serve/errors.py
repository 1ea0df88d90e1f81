"""The server's errors in OpenAI's shape: ``APIError``, the error body, and the handlers that turn
every failure (validation, unsupported parameters, a full queue, unknown routes, a crash) into
``{"error": {"message", "type", "param", "code"}}`` with the right status."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from medslm.serve.engine import QueueFull
from medslm.serve.protocol import Unsupported

log = logging.getLogger("medslm.serve")


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, type_: str, param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


_BRANCH = re.compile(r"^(str|int|bool|float|none|(list|dict|tuple)\[.*\]|function-.*|[A-Z]\w*)$")


def param_of(loc: tuple) -> str:
    parts = [str(x) for x in loc if x not in ("body",)]
    # drop pydantic's union-branch labels ("str", "list[int]", "function-after[...]", "TextPart"); our
    # field names are lower-case words, so they never match
    parts = [p for p in parts if not _BRANCH.match(p)]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        e = errs[0] if errs else {"loc": ("body",), "msg": "invalid request", "type": "invalid"}
        param = param_of(tuple(e.get("loc", ())))
        if e.get("type") == "extra_forbidden":
            msg = f"Unrecognized request argument supplied: {param}"
        elif e.get("type") == "json_invalid":
            param = "body"
            msg = "the request body is not valid JSON"
        elif e.get("type") == "missing":
            msg = f"{param}: required field is missing"
        else:  # pydantic's rule text, never the offending value (it may be patient text)
            msg = f"{param}: {e.get('msg', 'invalid value')}"
        return error_response(400, msg, "invalid_request_error", param)

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)

    @app.exception_handler(Unsupported)
    async def _unsupported(request: Request, exc: Unsupported) -> JSONResponse:
        return error_response(400, str(exc), "invalid_request_error", exc.param, "unsupported_parameter")

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull) -> JSONResponse:
        return error_response(429, "the server is at capacity (all slots busy and the queue is full); retry "
                    "after the Retry-After seconds", "rate_limit_error", code="queue_full",
                    headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = {404: "no such route", 405: "method not allowed on this route"}.get(exc.status_code,
                                                                                   str(exc.detail))
        return error_response(exc.status_code, msg, "invalid_request_error")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        rid = request.scope.get("state", {}).get("request_id", "")
        log.error("request id=%s internal error %s", rid, type(exc).__name__)
        return error_response(500, f"internal server error (request id {rid})", "server_error")
