"""The HTTP server (aiohttp): browser client, WebRTC signalling, session API, events, health, metrics.

Routes::

    GET    /                              the browser client (realtime/static/)
    GET    /api/config                    {ice_servers}
    POST   /api/offer                     {sdp, type} → {sdp, type, session_id, token} + X-Splatcast-Session
    GET    /api/sessions                  [{id, state, connection, age_s, frames, repeated, level, client}]
    POST   /api/sessions/{id}/say         {text} → 202
    POST   /api/sessions/{id}/interrupt   → 200
    POST   /api/sessions/{id}/emotion     {name, intensity} → 200 (name "auto": back to inferred emotions)
    POST   /api/sessions/{id}/expressiveness  {value 0..1} → 200
    DELETE /api/sessions/{id}             → 200
    GET    /api/sessions/{id}/events      websocket: state, transcript, stats, error events (JSON)
    GET    /healthz                       {status, sessions, capacity, replica}
    GET    /metrics                       Prometheus text

Every error is JSON ``{"error": message}`` with a 4xx/5xx status (and
``Retry-After``, rounded up, on 429/503); a bad request never disturbs other sessions.
With ``--agent-port`` the server also answers HAProxy's agent check
(:mod:`realtime.web.agent_check`); with ``--trusted-proxies`` it takes the
client from a trusted proxy's forwarding headers (:mod:`realtime.web.proxies`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from importlib import resources
from typing import Any

from aiohttp import WSMsgType, web

from realtime.events import Closed, Error, Event
from realtime.settings import Settings
from realtime.tasks import spawn
from realtime.web.agent_check import AgentCheckServer
from realtime.web.haproxy_config import SESSION_HEADER
from realtime.web.metrics import ErrorCounter, gauge, process_gauges
from realtime.web.openapi import openapi_spec
from realtime.web.proxies import TrustedProxies
from realtime.web.security import RateLimiter, auth_middleware, json_error, origin_middleware
from realtime.web.sessions import SessionError, SessionManager
from realtime.web.shell import Shared, serve

logger = logging.getLogger(__name__)

SETTINGS_KEY = web.AppKey("settings", Settings)
MANAGER_KEY = web.AppKey("manager", SessionManager)
LIMITER_KEY = web.AppKey("offer_limiter", RateLimiter)
ERRORS_KEY = web.AppKey("error_counter", ErrorCounter)
REPLICA_KEY = web.AppKey("replica", str)  # this server's name among replicas: host:port
WS_MESSAGES_PER_S = 20
MAX_BODY_BYTES = 256 * 1024
MAX_SAY_CHARS = 5_000
MAX_WS_MESSAGE = 4 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SessionError as exc:
        return json_error(exc.status, str(exc), exc.retry_after)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return json_error(exc.status, exc.reason)
        raise
    except Exception:
        logger.exception("server: %s %s failed", request.method, request.path)
        return json_error(500, "internal error (logged on the server)")


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise SessionError(f"request body over {MAX_BODY_BYTES} bytes", 413)
    raw = await request.read()
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SessionError("request body is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise SessionError(f"request body is not JSON: {exc.msg} at {exc.pos}") from exc
    except RecursionError as exc:  # "[[[[…" a few thousand deep (was a 500)
        raise SessionError("request body is nested too deeply") from exc
    if not isinstance(body, dict):
        raise SessionError("request body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise SessionError(f"missing field '{name}'")
        return None
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise SessionError(f"field '{name}' must be a {kind.__name__}")
    if isinstance(value, str) and not _is_unicode(value):
        raise SessionError(f"field '{name}' is not valid Unicode (a lone surrogate escape)")
    return value


def _is_unicode(text: str) -> bool:
    """False for a string with lone surrogates (JSON lets ``"\\ud800"`` through; UTF-8 cannot encode it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- routes ------------------------------------------------------------------------------------------
async def _index(request: web.Request) -> web.Response:
    page = resources.files("realtime.web").joinpath("static/index.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html")


async def _config(request: web.Request) -> web.Response:
    from realtime.web.avatar_api import AVATARS_KEY, upload_limits_json

    settings = request.app[SETTINGS_KEY]
    config: dict[str, Any] = {"ice_servers": [{"urls": url} for url in settings.ice_servers]}
    if AVATARS_KEY in request.app:
        config["upload_limits"] = upload_limits_json(request.app[AVATARS_KEY].limits)
    return web.json_response(config)


async def _offer(request: web.Request) -> web.Response:
    wait = request.app[LIMITER_KEY].take(request.remote or "?")
    if wait > 0:
        raise SessionError("too many new sessions from this address", 429, retry_after=wait)
    body = await _json_body(request)
    sdp = _field(body, "sdp", str)
    kind = _field(body, "type", str)
    avatar = _field(body, "avatar", str, required=False)
    expressiveness = _field(body, "expressiveness", float, required=False)
    if expressiveness is not None and not 0.0 <= expressiveness <= 1.0:
        raise SessionError("field 'expressiveness' must be within 0..1")
    manager = request.app[MANAGER_KEY]
    session, answer = await manager.create(sdp, kind, client=request.remote, avatar=avatar)
    if expressiveness is not None:
        session.set_expressiveness(expressiveness)
    return web.json_response(
        {
            "sdp": answer.sdp,
            "type": answer.type,
            "session_id": session.id,
            "token": session.token,
            "avatar": session.info().avatar,
        },
        headers={SESSION_HEADER: session.id},  # a balancer remembers which replica owns it (deploy/haproxy)
    )


async def _list(request: web.Request) -> web.Response:
    manager = request.app[MANAGER_KEY]
    return web.json_response([asdict(s.info()) for s in manager.sessions.values()])


async def _say(request: web.Request) -> web.Response:
    session = request.app[MANAGER_KEY].get(request.match_info["id"])
    body = await _json_body(request)
    text = _field(body, "text", str).strip()
    if not text:
        raise SessionError("field 'text' is empty")
    if len(text) > MAX_SAY_CHARS:
        raise SessionError(f"field 'text' is over {MAX_SAY_CHARS} characters", 413)
    await session.say(text)
    return web.json_response({"status": "accepted", "chars": len(text)}, status=202)


async def _interrupt(request: web.Request) -> web.Response:
    session = request.app[MANAGER_KEY].get(request.match_info["id"])
    await session.interrupt()
    return web.json_response({"status": "interrupted"})


async def _emotion(request: web.Request) -> web.Response:
    session = request.app[MANAGER_KEY].get(request.match_info["id"])
    body = await _json_body(request)
    name = _field(body, "name", str)
    intensity = _field(body, "intensity", float, required=False)
    session.set_emotion(name, 1.0 if intensity is None else intensity)
    return web.json_response({"status": "ok", "name": name})


async def _expressiveness(request: web.Request) -> web.Response:
    session = request.app[MANAGER_KEY].get(request.match_info["id"])
    body = await _json_body(request)
    value = _field(body, "value", float)
    session.set_expressiveness(value)
    return web.json_response({"status": "ok", "expressiveness": value})


async def _delete(request: web.Request) -> web.Response:
    manager = request.app[MANAGER_KEY]
    if not await manager.close(request.match_info["id"]):
        raise SessionError(f"no session {request.match_info['id']!r}", 404)
    return web.json_response({"status": "closed"})


async def _events(request: web.Request) -> web.StreamResponse:
    session = request.app[MANAGER_KEY].get(request.match_info["id"])
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_WS_MESSAGE)
    await ws.prepare(request)
    queue = session.subscribe()

    async def pump() -> None:
        try:
            while True:
                event = await queue.get()
                await ws.send_json(event.to_json())
                if isinstance(event, Closed):
                    await ws.close()
                    return
        except ConnectionResetError:  # the client went away; the receive loop below ends too
            return

    sender = spawn(pump(), f"session {session.id}: events websocket")
    window_start, count = time.monotonic(), 0
    try:
        async for msg in (
            ws
        ):  # the client may send commands too: {"type": "say"|"interrupt"|"emotion"|"expressiveness", ...}
            now = time.monotonic()
            if now - window_start >= 1.0:
                window_start, count = now, 0
            count += 1
            if count > WS_MESSAGES_PER_S:
                await ws.send_json(Error(message=f"over {WS_MESSAGES_PER_S} messages per second").to_json())
                await ws.close(code=1008, message=b"rate limit")
                break
            if msg.type != WSMsgType.TEXT:
                continue
            await _ws_command(session, msg.data, ws)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        session.unsubscribe(queue)
    return ws


async def _ws_command(session: Any, data: str, ws: web.WebSocketResponse) -> None:
    try:
        cmd = json.loads(data)
        if not isinstance(cmd, dict):
            raise ValueError("not an object")
        kind = cmd.get("type")
        text = cmd.get("text")
        if kind == "say" and isinstance(text, str) and 0 < len(text) <= MAX_SAY_CHARS and _is_unicode(text):
            await session.say(cmd["text"])
        elif kind == "interrupt":
            await session.interrupt()
        elif kind == "emotion" and isinstance(cmd.get("name"), str):
            session.set_emotion(cmd["name"], float(cmd.get("intensity", 1.0)))
        elif kind == "expressiveness" and isinstance(cmd.get("value"), int | float):
            session.set_expressiveness(float(cmd["value"]))
        else:
            raise ValueError(f"unknown or malformed command {kind!r}")
    except RecursionError:
        await ws.send_json(Error(message="bad command: nested too deeply").to_json())
    except (ValueError, TypeError, SessionError) as exc:
        await ws.send_json(Error(message=f"bad command: {exc}").to_json())


async def _healthz(request: web.Request) -> web.Response:
    manager = request.app[MANAGER_KEY]
    status = "draining" if manager.draining else "ok"
    return web.json_response(
        {
            "status": status,
            "sessions": len(manager.sessions),
            "capacity": manager.capacity(),
            "replica": request.app[REPLICA_KEY],
        },
        status=503 if manager.draining else 200,
    )


async def _metrics(request: web.Request) -> web.Response:
    manager = request.app[MANAGER_KEY]
    sched = manager.engine.scheduler
    lines = sched.timings.prometheus()
    lines += gauge("splatcast_sessions", "active sessions", len(manager.sessions))
    lines += gauge("splatcast_capacity", "sessions this machine holds at full frame rate", manager.capacity())
    lines += gauge("splatcast_frames_rendered_total", "frames rendered", sched.rendered, "counter")
    lines += gauge(
        "splatcast_frames_stale_total",
        "render jobs skipped past their deadline",
        sched.skipped_stale,
        "counter",
    )
    lines += gauge("splatcast_render_batches_total", "render batches", sched.batches, "counter")
    repeated = sum(s.pacer.stats.repeated for s in manager.sessions.values())
    lines += gauge(
        "splatcast_frames_repeated", "late frames replaced by the previous one (active sessions)", repeated
    )
    lines += process_gauges(
        tasks=len(asyncio.all_tasks()),
        peer_connections=manager.live_peer_connections(),
        errors=request.app[ERRORS_KEY].count,
    )
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec())


ROUTES: tuple[tuple[str, str, Handler], ...] = (  # each one is described in openapi.py (a test checks)
    ("GET", "/", _index),
    ("GET", "/api/config", _config),
    ("POST", "/api/offer", _offer),
    ("GET", "/api/sessions", _list),
    ("POST", "/api/sessions/{id}/say", _say),
    ("POST", "/api/sessions/{id}/interrupt", _interrupt),
    ("POST", "/api/sessions/{id}/emotion", _emotion),
    ("POST", "/api/sessions/{id}/expressiveness", _expressiveness),
    ("DELETE", "/api/sessions/{id}", _delete),
    ("GET", "/api/sessions/{id}/events", _events),
    ("GET", "/healthz", _healthz),
    ("GET", "/metrics", _metrics),
    ("GET", "/openapi.json", _openapi),
)


def create_app(settings: Settings, manager: SessionManager) -> web.Application:
    def session_token(session_id: str) -> str | None:
        session = manager.sessions.get(session_id)
        return session.token if session is not None else None

    middlewares: list[Any] = [_errors]
    if settings.trusted_proxies:  # first: the origin check, the limits and the logs see the real client
        middlewares.append(TrustedProxies(settings.trusted_proxies).middleware)
    middlewares += [origin_middleware(settings.cors_origins), auth_middleware(settings.token, session_token)]
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
    app[SETTINGS_KEY] = settings
    app[REPLICA_KEY] = f"{socket.gethostname()}:{settings.port}"
    app[MANAGER_KEY] = manager
    app[LIMITER_KEY] = RateLimiter(settings.offer_rate_per_minute)
    app[ERRORS_KEY] = ErrorCounter()
    static = resources.files("realtime.web").joinpath("static")
    for method, path, handler in ROUTES:
        if method == "GET":
            app.router.add_get(path, handler)  # answers HEAD too
        else:
            app.router.add_route(method, path, handler)
    app.router.add_static("/static/", str(static))
    engine = getattr(manager, "engine", None)
    if engine is not None and engine.avatars is not None:
        from engines.library.builds import BuildQueue
        from engines.voices import VoiceCatalog
        from realtime.web.avatar_api import AvatarService, SessionPressure, add_avatar_routes

        voices = getattr(manager, "voices", None) or VoiceCatalog()
        builds = BuildQueue(
            engine.avatars.library,
            voices=voices.list,  # a video built without a chosen voice gets the installed voice closest to it
            default_voice=lambda: voices.default_id,
            pressure=SessionPressure(lambda: manager.sessions.values()),  # paused while calls struggle
        )
        service = AvatarService(engine.avatars, builds, voices)
        add_avatar_routes(app, service, scheduler=getattr(engine, "scheduler", None))

    async def on_startup(app: web.Application) -> None:
        logging.getLogger().addHandler(app[ERRORS_KEY])  # counts ERROR records for splatcast_errors_total
        app[MANAGER_KEY].start()

    async def on_shutdown(app: web.Application) -> None:
        app[MANAGER_KEY].draining = True  # no new sessions while the current ones close
        await app[MANAGER_KEY].close_all()

    async def on_cleanup(app: web.Application) -> None:
        logging.getLogger().removeHandler(app[ERRORS_KEY])

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    if settings.agent_port is not None:
        _answer_agent_checks(app, settings.host, settings.agent_port, manager)
    return app


def _answer_agent_checks(app: web.Application, host: str, port: int, manager: SessionManager) -> None:
    """HAProxy's agent check on ``port`` for as long as the app runs: it opens before the HTTP port (a
    replica that answers is one that reports its load), says ``drain`` through the drain, and closes
    after the HTTP port (the balancer's health check then marks the replica down)."""
    agent = AgentCheckServer(manager.load)

    async def start(app: web.Application) -> None:
        await agent.start(host, port)

    async def stop(app: web.Application) -> None:
        await agent.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


def session_manager(shared: Shared) -> SessionManager:
    """Sessions on the shared engine and its avatar library, each with a conversation loop on the shared
    speech models (speaking with its avatar's own voice when it has one)."""
    import realtime.conversation.loop  # noqa: F401  Pipecat's pipeline modules, loaded before the shell's gc.freeze
    from realtime.media.avatars import attach_library

    attach_library(shared.engine, shared.settings)
    talk = ConversationFactory(shared.settings, shared.models, shared.voices)
    manager = SessionManager(shared.engine, talker_factory=talk)
    manager.voices = shared.voices
    manager.prepare_voice = talk.prepare_voice
    return manager


class ConversationFactory:
    """Makes each session's conversation loop; per-avatar voices are loaded once and shared."""

    def __init__(self, settings: Settings, models: Any, voices: Any = None) -> None:
        self.settings = settings
        self.voices = voices
        self.models = models
        self.default_voice = voices.default_id if voices is not None else None
        self._by_voice: dict[str, Any] = {}
        self._lock = threading.Lock()

    def prepare_voice(self, voice_id: str | None) -> Any:
        """The speech models speaking with ``voice_id`` (loads that Piper voice on first use; blocking)."""
        from realtime.conversation.services import load_voice

        if voice_id is None or voice_id in ("default", self.default_voice) or self.voices is None:
            return self.models
        with self._lock:
            models = self._by_voice.get(voice_id)
            if models is None:
                models = self.models.with_voice(load_voice(self.voices.get(voice_id)))
                self._by_voice[voice_id] = models
            return models

    def __call__(self, stream: Any, publish: Callable[[Event], None], voice: str | None = None) -> Any:
        from realtime.conversation.loop import Conversation

        return Conversation(self.settings, stream, publish, models=self.prepare_voice(voice))


async def run(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Serve sessions until SIGINT/SIGTERM, then let them finish for up to ``drain_s`` (the shared shell)."""
    managers: list[SessionManager] = []

    def make_app(shared: Shared) -> web.Application:
        managers.append(session_manager(shared))
        return create_app(settings, managers[0])

    async def drain_sessions() -> None:
        await drain(managers[0], settings.drain_s)

    await serve(settings, "splatcast", make_app, drain=drain_sessions, ready=ready)


async def drain(manager: SessionManager, seconds: float) -> None:
    """Refuse new sessions and let current ones finish for up to ``seconds``."""
    manager.draining = True
    if manager.sessions:
        logger.info("server: draining %d session(s) for up to %.0f s", len(manager.sessions), seconds)
    deadline = time.monotonic() + seconds
    while manager.sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
    await manager.close_all()
