"""The server's door keeper, one pure ASGI middleware (cheap per request): an optional API key on /v1 and
/metrics, a request-body limit (413 naming it, also for bodies without a Content-Length) and Prometheus counters
and latency histograms per route."""

from __future__ import annotations

import hmac
import json
import re
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ID = re.compile(r"/\d+(?=/|$)")


class BodyTooLarge(Exception):
    """A request body passed the configured limit."""

    def __init__(self, limit: int):
        super().__init__(f"request body over the {limit_text(limit)} limit (sensorium serve --max-body)")
        self.limit = limit


def limit_text(limit: int) -> str:
    return f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit} bytes"


def route_of(path: str) -> str:
    """A path as a metrics label: item ids replaced by {id}, unknown paths pooled."""
    path = _ID.sub("/{id}", path)
    known = ("/", "/health", "/metrics", "/v1/models", "/v1/embeddings", "/v1/chat/completions", "/v1/search",
             "/v1/items/{id}", "/v1/items/{id}/content", "/v1/items/{id}/thumbnail")
    return path if path in known or path.startswith("/static/") else "other"


class Metrics:
    """Request counts by (method, route, status) and latency histograms by route, as Prometheus text."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, list[float]] = {}  # route -> [bucket counts..., sum, count]
        self.gauges: dict[str, Callable[[], float]] = {}
        self.started = time.time()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(method, route, status)] += 1
            hist = self.latency.setdefault(route, [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    hist[i] += 1
            hist[-2] += seconds
            hist[-1] += 1

    def render(self) -> str:
        lines = ["# HELP sensorium_requests_total HTTP requests by method, route and status.",
                 "# TYPE sensorium_requests_total counter"]
        with self.lock:
            for (method, route, status), n in sorted(self.requests.items()):
                lines.append(f'sensorium_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}')
            lines += ["# HELP sensorium_request_seconds Request latency by route.",
                      "# TYPE sensorium_request_seconds histogram"]
            for route, hist in sorted(self.latency.items()):
                for bound, n in zip(BUCKETS, hist):
                    lines.append(f'sensorium_request_seconds_bucket{{route="{route}",le="{bound}"}} {int(n)}')
                lines.append(f'sensorium_request_seconds_bucket{{route="{route}",le="+Inf"}} {int(hist[-1])}')
                lines.append(f'sensorium_request_seconds_sum{{route="{route}"}} {hist[-2]:.6f}')
                lines.append(f'sensorium_request_seconds_count{{route="{route}"}} {int(hist[-1])}')
        for name, read in sorted(self.gauges.items()):
            lines += [f"# TYPE {name} gauge", f"{name} {read()}"]
        lines += ["# TYPE sensorium_uptime_seconds gauge", f"sensorium_uptime_seconds {time.time() - self.started:.1f}"]
        return "\n".join(lines) + "\n"


def error_body(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> bytes:
    """The OpenAI error shape, so OpenAI clients raise their usual exceptions with our message."""
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": status}}).encode()


class Guard:
    """ASGI middleware: API key, body limit, metrics."""

    def __init__(self, app: Any, metrics: Metrics, api_key: str | None, max_body: int):
        self.app, self.metrics, self.api_key, self.max_body = app, metrics, api_key, max_body

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path, method = scope["path"], scope["method"]
        status_seen = [500]

        async def send_tracked(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_seen[0] = message["status"]
            await send(message)

        try:
            if self.api_key and (path.startswith("/v1/") or path == "/metrics") and not self._authorised(scope):
                await self._reply(send_tracked, 401, error_body(401, "missing or wrong API key: send the header "
                                                                "'Authorization: Bearer KEY'", "authentication_error"))
                return
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                await self._reply(send_tracked, 413, error_body(413, str(BodyTooLarge(self.max_body))))
                return
            await self.app(scope, self._limited(receive), send_tracked)
        finally:
            self.metrics.observe(method, route_of(path), status_seen[0], time.perf_counter() - start)

    def _authorised(self, scope: dict) -> bool:
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        token = given[7:] if given.lower().startswith("bearer ") else headers.get(b"x-api-key", b"").decode("latin-1")
        return bool(token) and hmac.compare_digest(token.encode(), self.api_key.encode())

    def _limited(self, receive: Callable[[], Awaitable[dict]]) -> Callable[[], Awaitable[dict]]:
        seen = [0]

        async def wrapped() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        return wrapped

    @staticmethod
    async def _reply(send: Callable, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
