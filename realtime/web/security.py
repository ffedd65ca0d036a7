"""Who may call the API, from where, and how often.

* **Tokens.** With a server token (``--token`` / ``SPLATCAST_TOKEN``) every
  ``/api`` route, the events websocket and ``/metrics`` need
  ``Authorization: Bearer <token>``. Session routes (``/api/sessions/{id}/...``)
  always need that session's own token (returned by ``/api/offer``) or the
  server token, so one session cannot drive another's avatar. Browsers cannot
  set headers on a WebSocket: there, ``?token=`` is accepted instead.
* **Origins.** A browser request whose ``Origin`` is neither the server's own
  nor in the allowlist is refused (403): a page elsewhere cannot start sessions
  on a server on your machine. Allowed origins get CORS headers.
* **Rate.** New sessions per client IP are limited (token bucket, 429 +
  ``Retry-After``).
* **Logs.** A logging filter masks every secret value wherever it would appear.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SessionTokenLookup = Callable[[str], str | None]  # session id → its token (None: no such session)

PUBLIC_PATHS = frozenset({"/", "/healthz", "/openapi.json"})


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` value for a wait of ``seconds``: whole seconds, rounded up, at least 1.

    Rounded down, a client that waits as told comes back a fraction of a second too early and is
    refused again (the offer limiter's next token was 14.6 s away: "14" got a second 429).
    """
    return str(max(1, math.ceil(seconds)))


def json_error(status: int, message: str, wait_s: float | None = None) -> web.Response:
    """Every error the API answers: JSON ``{"error": message}``, and ``Retry-After`` when there is a wait."""
    headers = {"Retry-After": retry_after(wait_s)} if wait_s is not None else None
    return web.json_response({"error": message}, status=status, headers=headers)


def _presented_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return request.query.get("token")
    return None


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith("/static/")


def auth_middleware(
    server_token: str | None, session_token: SessionTokenLookup
) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if request.method == "OPTIONS" or _is_public(path):
            return await handler(request)
        presented = _presented_token(request)
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[:2] == ["api", "sessions"]:
            owner = session_token(parts[2])
            if owner is None:
                return json_error(404, f"no session {parts[2]!r}")
            if _same(presented, owner) or _same(presented, server_token):
                return await handler(request)
            return json_error(401 if presented is None else 403, "this session needs its token (Bearer)")
        if server_token is not None and not _same(presented, server_token):
            return json_error(401 if presented is None else 403, "this server needs its API token (Bearer)")
        return await handler(request)

    return middleware


def origin_middleware(allowed: Iterable[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    allow = {o.rstrip("/") for o in allowed}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        own = f"{request.scheme}://{request.host}"
        cross = origin is not None and origin.rstrip("/") != own
        if cross and origin is not None and origin.rstrip("/") not in allow:
            if request.path.startswith("/api/") or request.method not in ("GET", "HEAD"):
                return json_error(403, f"origin {origin} is not allowed (see --cors-origins)")
        if request.method == "OPTIONS" and cross:
            response: web.StreamResponse = web.Response(status=204)
        else:
            response = await handler(request)
        if cross and origin is not None and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
        return response

    return middleware


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token bucket per key: ``per_minute`` sustained, bursts of up to ``burst``."""

    def __init__(self, per_minute: int, burst: int | None = None, max_keys: int = 10_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, per_minute // 4))
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """0 when allowed (a token is spent), else seconds until the next token."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:  # forget the stalest keys: memory stays bounded
                for stale in sorted(self._buckets, key=lambda k: self._buckets[k].stamp)[
                    : self.max_keys // 10
                ]:
                    del self._buckets[stale]
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


class SecretFilter(logging.Filter):
    """Masks secret values in every log record that passes the handler."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self.secrets:
            masked = masked.replace(secret, "***")
        if masked != message:
            record.msg, record.args = masked, None
        return True
