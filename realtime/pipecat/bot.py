"""``splatcast bot``: a ready Pipecat voice bot with a splat face, offline, no keys.

::

    browser (our page, realtime/pipecat/static/, speaking SmallWebRTC's signalling)
      ⇅ SmallWebRTC (aiortc)
    transport.input ─▶ Whisper tiny.en ─▶ user turn (Silero VAD, Smart Turn) ─▶ brain ─▶ Piper
      ─▶ SplatAvatarService ─▶ transport.output ─▶ assistant context

Every piece is Pipecat's or already ours, and shared with ``splatcast serve``:
the conversation pipeline (:func:`realtime.conversation.pipeline.build_pipeline`),
the app shell (:mod:`realtime.web.shell`: shared engine and models, the serve
loop) and admission (a :class:`realtime.media.scheduler.Lease` per call), with
:class:`realtime.pipecat.SplatAvatarService` over
:class:`realtime.pipecat.SplatSmallWebRTCTransport` as the pipeline's last stages. The brain is ``echo``
unless ``--llm-url`` names an OpenAI-compatible server.

HTTP (aiohttp), the protocol Pipecat's SmallWebRTC clients speak (ours, and its prebuilt client):

* ``GET /`` → our page (``realtime/pipecat/static/``: index.html, bot.js,
  bot.css), which needs nothing from other sites; ``GET /healthz``
* ``POST /start`` → ``{"sessionId"}``
* ``POST /sessions/{id}/api/offer`` (or ``/api/offer``) ``{sdp, type, pc_id?,
  restart_pc?}`` → ``{sdp, type, pc_id}``; ``PATCH`` the same path with
  ``{pc_id, candidates: [{candidate, sdp_mid, sdp_mline_index}]}`` for trickled ICE
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web

from realtime.conversation.mic_audio import PIPELINE_SAMPLE_RATE
from realtime.conversation.pipeline import build_pipeline, new_worker
from realtime.media.mic_jitter import listen_promptly
from realtime.media.scheduler import AtCapacity, Lease
from realtime.media.stream import OUTPUT_SAMPLE_RATE
from realtime.settings import Settings
from realtime.tasks import spawn
from realtime.web.security import retry_after as retry_after_header
from realtime.web.shell import Shared, serve

logger = logging.getLogger(__name__)

GREETING = "Hello! I am a splatcast avatar. Say something, and I will answer."
PAGE = resources.files("realtime.pipecat").joinpath("static")  # index.html, bot.js, bot.css


class BotError(RuntimeError):
    """The bot cannot start (the message says what to install or set)."""


@dataclass
class Call:
    """One browser's call: its WebRTC connection, its admission lease and the task running its pipeline."""

    connection: Any  # SmallWebRTCConnection
    lease: Lease
    task: asyncio.Task[None] | None = None
    started_at: float = field(default_factory=time.monotonic)


def listen_to_mic_promptly(connection: Any) -> int:
    """The call's microphone without aiortc's 4-packet (80 ms) jitter-buffer prefetch, as ``serve`` has it
    (:mod:`realtime.media.mic_jitter`): the bot only listens to the user's voice, never plays it back, so
    every word (and the end of the turn) reaches its VAD and Whisper 80 ms sooner. Call it once the
    SmallWebRTCConnection has its remote description, before media flows. Returns the receivers changed."""
    return sum(listen_promptly(t.receiver) for t in connection.pc.getTransceivers() if t.kind == "audio")


def _asset(name: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_request: web.Request) -> web.Response:
        text = PAGE.joinpath(name).read_text(encoding="utf-8")
        return web.Response(text=text, content_type=content_type, headers={"Cache-Control": "no-cache"})

    return handler


class BotServer:
    """The HTTP side: serves the client and turns each WebRTC offer into a call with its own pipeline."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.calls: dict[str, Call] = {}  # by pc_id

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post("/start", self.start)
        for path in ("/api/offer", "/sessions/{session_id}/api/offer"):
            app.router.add_post(path, self.offer)
            app.router.add_patch(path, self.candidates)
        # our own page, speaking SmallWebRTC's signalling: nothing is loaded from another site
        for name, kind in (
            ("index.html", "text/html"),
            ("bot.js", "text/javascript"),
            ("bot.css", "text/css"),
        ):
            app.router.add_get("/" if name == "index.html" else f"/{name}", _asset(name, kind))
        app.on_shutdown.append(self._close_calls)
        return app

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "calls": len(self.calls)})

    async def start(self, _request: web.Request) -> web.Response:
        session_id = str(uuid.uuid4())  # SmallWebRTC's protocol names one; the offer path carries it back
        body: dict[str, Any] = {"sessionId": session_id}
        if self.shared.settings.ice_servers:
            body["iceConfig"] = {"iceServers": [{"urls": list(self.shared.settings.ice_servers)}]}
        return web.json_response(body)

    async def offer(self, request: web.Request) -> web.Response:
        from pipecat.transports.smallwebrtc.connection import IceServer, SmallWebRTCConnection

        try:
            body = await request.json()
            sdp, kind = str(body["sdp"]), str(body["type"])
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text="expected JSON {sdp, type}") from None
        pc_id = body.get("pc_id")
        call = self.calls.get(pc_id) if pc_id else None
        if call is not None:
            restart = bool(body.get("restart_pc"))
            await call.connection.renegotiate(sdp=sdp, type=kind, restart_pc=restart)
            if restart:  # a new peer connection, before its media flows (not the live one's buffer mid-call)
                listen_to_mic_promptly(call.connection)
        else:
            settings = self.shared.settings
            try:
                lease = self.shared.engine.scheduler.lease(settings.capacity, settings.max_sessions)
            except AtCapacity as exc:
                raise web.HTTPServiceUnavailable(
                    text=f"the avatar is busy with other calls ({exc})",
                    headers={"Retry-After": retry_after_header(exc.retry_after)},
                ) from exc
            try:
                ice = [IceServer(urls=url) for url in settings.ice_servers] or None
                connection = SmallWebRTCConnection(ice_servers=ice)
                await connection.initialize(sdp=sdp, type=kind)
                listen_to_mic_promptly(connection)
            except BaseException:
                lease.release()
                raise
            call = Call(connection, lease)

            @connection.event_handler("closed")
            async def _closed(conn: Any) -> None:
                self.calls.pop(conn.pc_id, None)

            call.task = spawn(self._run(call), f"bot call {connection.pc_id}")
        answer = call.connection.get_answer()
        if answer is None:
            raise web.HTTPInternalServerError(text="the WebRTC connection produced no answer")
        self.calls[answer["pc_id"]] = call
        return web.json_response(answer)

    async def candidates(self, request: web.Request) -> web.Response:
        from aiortc.sdp import candidate_from_sdp

        try:
            body = await request.json()
            call = self.calls.get(str(body["pc_id"]))
            items = list(body.get("candidates", []))
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text="expected JSON {pc_id, candidates}") from None
        if call is None:
            raise web.HTTPNotFound(text="no such peer connection")
        for item in items:
            text = item.get("candidate") if isinstance(item, dict) else None
            candidate = None  # an empty candidate marks the end of candidates
            if text:
                candidate = candidate_from_sdp(text)
                candidate.sdpMid = item.get("sdp_mid")
                candidate.sdpMLineIndex = item.get("sdp_mline_index")
            await call.connection.add_ice_candidate(candidate)
        return web.json_response({"status": "success"})

    async def _run(self, call: Call) -> None:
        try:
            await run_call(self.shared, call.connection)
        finally:
            call.lease.release()

    async def _close_calls(self, _app: web.Application) -> None:
        calls = list(self.calls.values())
        self.calls.clear()
        for call in calls:
            try:
                await call.connection.disconnect()
            except Exception:  # it is going away anyway; the call's task is cancelled below
                logger.warning(
                    "bot: call %s did not disconnect cleanly", call.connection.pc_id, exc_info=True
                )
        tasks = [c.task for c in calls if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_call(shared: Shared, connection: Any) -> None:
    """Run one call's pipeline (the conversation pipeline ending in the avatar service) until it hangs up."""
    from pipecat.frames.frames import TTSSpeakFrame
    from pipecat.workers.runner import WorkerRunner

    from realtime.pipecat.service import SplatAvatarService
    from realtime.pipecat.transport import SplatSmallWebRTCTransport, avatar_transport_params

    settings = shared.settings
    params = avatar_transport_params(
        fps=settings.fps, size=settings.size, audio_in_sample_rate=PIPELINE_SAMPLE_RATE
    )
    transport = SplatSmallWebRTCTransport(connection, params)
    avatar = SplatAvatarService(engine=shared.engine, fps=settings.fps, size=settings.size, warm=False)
    await avatar.warm_up()  # off the event loop, before the pipeline starts: StartFrame passes at once
    built = build_pipeline(settings, shared.models, avatar, transport=transport)
    worker = new_worker(built.pipeline, OUTPUT_SAMPLE_RATE)

    @transport.event_handler("on_client_connected")
    async def _connected(_transport: Any, _client: Any) -> None:
        logger.info("bot: call %s connected", connection.pc_id)
        await worker.queue_frame(TTSSpeakFrame(GREETING))

    @transport.event_handler("on_client_disconnected")
    async def _disconnected(_transport: Any, _client: Any) -> None:
        logger.info("bot: call %s hung up", connection.pc_id)
        await worker.cancel(reason="the browser hung up")

    @avatar.event_handler("on_pacer_failed")
    async def _avatar_failed(_avatar: Any, _error: BaseException) -> None:
        await worker.cancel(reason="the avatar stopped")  # no face, no call: the browser sees it end

    try:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()
    finally:
        logger.info(
            "bot: call %s over: %d images (%d late, %d repeated), audio→first image %s s",
            connection.pc_id,
            avatar.stats.images,
            avatar.stats.late,
            avatar.stats.repeated,
            [round(s, 3) for s in avatar.stats.first_audio_to_image_s],
        )


async def serve_bot(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Load the models, serve the client and calls until SIGINT/SIGTERM (the shared shell)."""
    await serve(settings, "splatcast bot", lambda shared: BotServer(shared).app(), ready=ready)


def bot_settings(settings: Settings) -> Settings:
    """``--llm-url`` alone switches the brain to the OpenAI-compatible one."""
    if settings.llm_url and settings.brain == "echo":
        settings = settings.replace(brain="openai")
    if settings.brain == "openai" and not settings.llm_model:
        raise BotError("--llm-url needs --llm-model too (the model name the server knows)")
    return settings
