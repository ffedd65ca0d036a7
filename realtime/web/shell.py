"""The one application shell of ``splatcast serve`` and ``splatcast bot``.

Both load the same shared parts once (:class:`Shared`: the engine with its
avatar, renderer, render pool and a2v network, and the speech models), serve
an aiohttp app until SIGINT/SIGTERM (:func:`serve`), optionally drain, and
clean up. They differ only in the app (``realtime.web.server.create_app``:
sessions with our own WebRTC tracks; ``realtime.pipecat.bot.BotServer``: one
Pipecat pipeline per call) and in what draining means.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from aiohttp import web

from engines.voices import VoiceCatalog, default_voices_dir
from realtime.conversation.services import SpeechModels
from realtime.media.audio_level import use_numpy_audio_level
from realtime.media.engine import Engine
from realtime.media.video_encoder import use_rendered_vp8
from realtime.settings import Settings
from realtime.web.memory import heap_allocations

logger = logging.getLogger(__name__)


@dataclass
class Shared:
    """What every session of one process shares (loaded once, before the server listens)."""

    settings: Settings
    engine: Engine  # avatar, frame renderer (warmed up), render scheduler, a2v
    models: SpeechModels  # Whisper, Piper, Silero VAD, Smart Turn (one copy each, shared by the sessions)
    voices: VoiceCatalog | None = None  # the Piper voices on disk (`--voices`); models.tts is the default one

    @classmethod
    def load(cls, settings: Settings) -> Shared:
        voices = VoiceCatalog(dirs=[settings.voices or default_voices_dir()], default=settings.voice)
        use_rendered_vp8()  # this process's VP8 senders: settings for rendered frames, per-frame reports
        use_numpy_audio_level()  # aiortc's per-packet audio level off its Python loop (event loop CPU)
        engine = Engine.load(settings)
        try:
            models = SpeechModels.load(voices.get("default") if settings.voice else None)
        except BaseException:
            engine.close()
            raise
        models = replace(
            models,
            tts_cpu=functools.partial(engine.scheduler.timings.observe, "tts_cpu"),
            stt_memory=heap_allocations,  # serve tuned the allocator (realtime.web.memory)
        )
        return cls(settings, engine, models, voices)

    def close(self) -> None:
        self.engine.close()


def listen_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    return f"http://{host}:{settings.port}/"


async def serve(
    settings: Settings,
    name: str,
    make_app: Callable[[Shared], web.Application],
    drain: Callable[[], Awaitable[None]] | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Load :class:`Shared`, serve ``make_app(shared)`` until SIGINT/SIGTERM, ``drain()``, clean up.

    ``name`` is what the start-up line calls the server ("splatcast", "splatcast bot").
    """
    loop = asyncio.get_running_loop()
    shared = await loop.run_in_executor(None, Shared.load, settings)
    app = make_app(shared)  # imports what sessions need (the conversation loop, Pipecat) before the freeze
    # the models, modules and app made so far live as long as the process: keep them out of the cyclic
    # collector's way, so the collection after each closed session (sessions.py) takes ~25 ms, not ~150
    gc.collect()
    gc.freeze()
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        logger.info("%s: listening on %s:%s", name, settings.host, settings.port)
        print(f"{name} is serving the avatar at {listen_url(settings)}  (Ctrl+C to stop)", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready.set()
        await stop.wait()
        if drain is not None:
            await drain()
    finally:
        logger.info("%s: shutting down", name)
        await runner.cleanup()  # the app's on_shutdown ends its sessions or calls
        shared.close()
