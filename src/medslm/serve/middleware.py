"""The ASGI middleware in front of every route: request ids, API keys, the body-size limit, the
loading state, a metadata-only access log (never a prompt) and request metrics; and the server's
shared state and configuration."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from medslm.serve.engine import Engine
from medslm.serve.errors import APIError, error_response
from medslm.serve.metrics import Metrics

log = logging.getLogger("medslm.serve")

PUBLIC = {"/health", "/", "/favicon.ico"}  # no key needed: liveness and the page's static shell


@dataclass
class ServerConfig:
    model_name: str = "medslm"
    api_keys: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)


class Guard:
    """Pure ASGI middleware: request id, API keys, body size, metadata-only access log, metrics."""

    def __init__(self, app: Any, state: "ServerState"):
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        st = self.state
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id", "")
        if not rid or len(rid) > 128 or not rid.isprintable():
            rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        path = scope.get("path", "")
        t0 = time.perf_counter()
        status_box = {"status": 0}

        async def send_wrapped(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status_box["status"] = msg["status"]
                msg.setdefault("headers", [])
                msg["headers"] = list(msg["headers"]) + [(b"x-request-id", rid.encode())]
            await send(msg)

        async def respond(resp: Response) -> None:
            await resp(scope, receive, send_wrapped)

        try:
            if st.config.api_keys and path not in PUBLIC and scope.get("method") != "OPTIONS":
                auth = headers.get("authorization", "")
                token = auth[7:] if auth[:7].lower() == "bearer " else ""
                ok = False
                for k in st.config.api_keys:  # compare with every key: time does not reveal which
                    ok |= hmac.compare_digest(token.encode(), k.encode())
                if not ok:
                    return await respond(error_response(401, "missing or invalid API key: send "
                                              "'Authorization: Bearer <key>'", "authentication_error",
                                              code="invalid_api_key"))
            if not st.engine.ready and path not in ("/health", "/metrics", "/"):
                return await respond(error_response(503, "the model is still loading; poll /health until it "
                                          "answers 200", "server_error", code="loading",
                                          headers={"Retry-After": "5"}))
            limit = st.limits_body
            clen = headers.get("content-length")
            if clen is not None and clen.isdigit() and int(clen) > limit:
                return await respond(error_response(413, f"request body of {clen} bytes exceeds the limit of {limit} "
                                          "bytes", "invalid_request_error", code="request_too_large"))
            seen = {"n": 0}

            async def receive_limited() -> dict:
                msg = await receive()
                if msg["type"] == "http.request":
                    seen["n"] += len(msg.get("body", b""))
                    if seen["n"] > limit:
                        raise APIError(413, f"request body exceeds the limit of {limit} bytes",
                                       code="request_too_large")
                return msg

            await self.app(scope, receive_limited, send_wrapped)
        finally:
            dt = time.perf_counter() - t0
            route = path if path in st.routes else "other"
            st.metrics.requests.labels(route, str(status_box["status"])).inc()
            extra = scope["state"].get("usage", {})
            log.info("request id=%s method=%s route=%s status=%s seconds=%.3f%s", rid,
                     scope.get("method"), route, status_box["status"], dt,
                     "".join(f" {k}={v}" for k, v in extra.items()))


class ServerState:
    def __init__(self, engine: Engine, config: ServerConfig, metrics: Metrics):
        self.engine, self.config, self.metrics = engine, config, metrics
        self.limits_body = engine.limits.max_body_bytes
        self.routes: set[str] = set()
        self.rag: Any = None
