"""Process-wide shared parts: the avatar, its renderer, the render scheduler and the lip-sync model.

Built once by ``splatcast serve`` (and by tests) from the settings and passed to
the session manager; sessions share these and own only their per-session
state. Nothing here is global.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from engines import assets
from realtime.media.avatars import AvatarSet, resolve_avatar_path
from realtime.media.frame_renderer import FrameRenderer
from realtime.media.scheduler import Scheduler
from realtime.media.stream import AvatarStream, LipModel
from realtime.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Engine:
    settings: Settings
    avatar: Any  # engines.splat.avatar.Avatar
    renderer: FrameRenderer
    scheduler: Scheduler
    lip_model: LipModel | None
    avatars: AvatarSet | None = None  # the avatar library sessions pick from (serve); None: only `avatar`

    @classmethod
    def load(cls, settings: Settings, warmup: bool = True) -> Engine:
        from engines.splat.avatar import load_avatar

        t = time.perf_counter()
        path = resolve_avatar_path(settings.avatar, settings.avatars) or assets.default_avatar()
        avatar = load_avatar(path)
        renderer = FrameRenderer(avatar, (settings.size, settings.size), backend=settings.render_backend)
        workers, threads = render_pool(settings)
        setup = None
        if settings.render_backend == "cpu":
            from engines.splat.raster_cpu import set_frame_threads

            setup = functools.partial(set_frame_threads, threads)
        scheduler = Scheduler(fps=settings.fps, workers=workers, worker_setup=setup)
        lip_model = load_lip_model(settings)
        engine = cls(settings, avatar, renderer, scheduler, lip_model)
        if warmup:
            compile_s = renderer.warmup()
            logger.info("engine: renderer warmed up in %.1f s", compile_s)
        logger.info(
            "engine: avatar %s (%d Gaussians, %d channels), %s backend (%d render workers x %d threads) "
            "at %d px, %d fps, ready in %.1f s",
            path.name,
            len(avatar.means),
            len(avatar.channels),
            settings.render_backend,
            workers,
            threads,
            settings.size,
            settings.fps,
            time.perf_counter() - t,
        )
        return engine

    def new_stream(
        self, seed: int = 0, avatar: Any = None, expressiveness: float | None = None
    ) -> AvatarStream:
        """A new stream of ``avatar`` (an ``engines.splat.avatar.Avatar``; None: the engine's own) at the
        engine's frame rate, with its lip model (``expressiveness`` None: the settings')."""
        e = self.settings.expressiveness if expressiveness is None else expressiveness
        return AvatarStream.for_avatar(
            self.avatar if avatar is None else avatar,
            self.settings.fps,
            self.lip_model,
            seed=seed,
            expressiveness=e,
        )

    def close(self) -> None:
        self.scheduler.close()


def render_pool(settings: Settings) -> tuple[int, int]:
    """(render workers, threads per frame): by default one worker per core on the cpu backend, each
    frame on one thread (see :mod:`realtime.media.scheduler`); one worker on every core otherwise."""
    cores = os.cpu_count() or 1
    if settings.render_backend != "cpu":
        return settings.render_workers or 1, settings.numba_threads or cores
    workers = settings.render_workers or cores
    return workers, settings.numba_threads or max(1, cores // workers)


def load_lip_model(settings: Settings) -> LipModel | None:
    """The a2v network for audio that comes without alignments (None: mouth follows alignments only)."""
    from engines.a2v.runtime import A2VError, load_a2v

    try:
        model: LipModel = load_a2v(runtime=settings.a2v_runtime, fps=settings.fps)
    except A2VError as exc:
        # Piper's alignments still drive the mouth; only audio without alignments stays mouth-closed
        logger.warning("engine: a2v network unavailable (%s); only aligned TTS audio moves the mouth", exc)
        return None
    return model
