"""HTTP routes of the avatar library, its builds and the voices.

Routes::

    GET    /api/avatars                       the library: [{id, name, created, source, voice, preview, ...}]
    POST   /api/avatars                       multipart {name, voice?, file} → 202 {id, job}
    GET    /api/avatars/{id}                  one avatar
    GET    /api/avatars/{id}/preview.png      its preview (PNG)
    DELETE /api/avatars/{id}                  → 200; 409 while a session uses it; 403 for the bundled default
    GET    /api/avatars/jobs/{job}            a build's state, stage, progress, queue position, error
    GET    /api/avatars/jobs/{job}/events     websocket: the same objects as the build moves on
    GET    /api/voices                        the Piper voices this server can speak with

An upload is streamed to the library's staging area and checked before
anything is queued (:mod:`engines.library.uploads`): a bad one gets its 4xx
and leaves nothing behind. The checks that decode (and look for faces) run on
one background thread at the lowest CPU priority, so live calls keep theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from engines.library.builds import BuildQueue
from engines.library.store import DEFAULT_ID, LibraryError
from engines.library.uploads import (
    MediaInfo,
    UploadError,
    UploadLimits,
    check_faces,
    inspect_media,
    load_photo,
    receive,
    video_frames,
)
from engines.voices import VoiceCatalog, VoiceError
from realtime.media.avatars import AvatarSet
from realtime.web.haproxy_config import JOB_HEADER

logger = logging.getLogger(__name__)

MAX_FIELD_BYTES = 1024  # the text fields of an upload (name, voice)
MAX_UPLOADS_AT_ONCE = 2
MAX_QUEUED_BUILDS = 8
FACE_SAMPLES = 3  # video frames checked for exactly one face (at 20 %, 50 %, 80 % of the clip)
READ_CHUNK = 256 * 1024
# what a running build counts as in admission control, in sessions: its process gets only CPU the sessions
# leave (SCHED_IDLE, one thread), but while it runs one session fewer is admitted, so the sessions that are
# admitted keep their frame rate (measured: `splatcast bench build`)
BUILD_SESSION_SHARE = 1.0


def _lowest_priority() -> None:
    """This thread (and every process it starts) at nice 19: uploads are checked with left-over CPU."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


@dataclass
class AvatarService:
    """Everything the avatar routes use; one per server process."""

    avatars: AvatarSet
    builds: BuildQueue
    voices: VoiceCatalog
    limits: UploadLimits = field(default_factory=UploadLimits)
    uploads: int = 0  # uploads being received or checked now
    checks: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, "upload-check", initializer=_lowest_priority)
    )

    @property
    def library(self) -> Any:
        return self.avatars.library

    def start(self) -> None:
        self.builds.start()

    async def close(self) -> None:
        await self.builds.close()
        self.checks.shutdown(wait=False, cancel_futures=True)

    def entry_json(self, entry: Any) -> dict[str, Any]:
        out = entry.to_json()
        out["in_use"] = self.avatars.in_use(entry.id)
        return out


AVATARS_KEY = web.AppKey("avatars", AvatarService)


def _fail(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _library_error(exc: LibraryError | VoiceError) -> web.Response:
    return _fail(getattr(exc, "status", 400), str(exc))


# --- the library ------------------------------------------------------------------------------------------
async def _list(request: web.Request) -> web.Response:
    service = request.app[AVATARS_KEY]
    entries = await asyncio.to_thread(service.library.list)
    return web.json_response([service.entry_json(e) for e in entries])


async def _get(request: web.Request) -> web.Response:
    service = request.app[AVATARS_KEY]
    try:
        entry = service.library.get(request.match_info["id"])
    except LibraryError as exc:
        return _library_error(exc)
    return web.json_response(service.entry_json(entry))


async def _preview(request: web.Request) -> web.StreamResponse:
    service = request.app[AVATARS_KEY]
    avatar_id = request.match_info["id"]
    try:
        path = service.library.preview_path(avatar_id)
        if path is None and avatar_id == DEFAULT_ID:
            path = await asyncio.get_running_loop().run_in_executor(
                service.checks, _render_default_preview, service
            )
    except LibraryError as exc:
        return _library_error(exc)
    if path is None:
        return _fail(404, f"avatar {avatar_id!r} has no preview")
    return web.FileResponse(path, headers={"Content-Type": "image/png", "Cache-Control": "no-cache"})


def _render_default_preview(service: AvatarService) -> Path:
    import io

    from PIL import Image

    from engines.splat.avatar import load_avatar
    from engines.splat.preview import render_preview

    avatar = load_avatar(service.library.default_entry().path)
    buf = io.BytesIO()
    Image.fromarray(render_preview(avatar)).save(buf, format="PNG", optimize=True)
    return service.library.save_preview(DEFAULT_ID, buf.getvalue())


async def _delete(request: web.Request) -> web.Response:
    service = request.app[AVATARS_KEY]
    avatar_id = request.match_info["id"]
    if service.avatars.cache.users(avatar_id):
        return _fail(409, f"avatar {avatar_id!r} is in use by a session; end the session first")
    try:
        await asyncio.to_thread(service.library.remove, avatar_id)
    except LibraryError as exc:
        return _library_error(exc)
    service.avatars.cache.discard(avatar_id)
    return web.json_response({"status": "deleted", "id": avatar_id})


async def _voices(request: web.Request) -> web.Response:
    voices = request.app[AVATARS_KEY].voices
    await asyncio.to_thread(voices.refresh)
    return web.json_response([v.to_json(default=v.id == voices.default_id) for v in voices.list()])


# --- uploads and builds -----------------------------------------------------------------------------------
# what aiohttp's multipart parser raises on a malformed body (InvalidHeader & co. are HttpProcessingError)
MULTIPART_ERRORS = (ValueError, LookupError, AssertionError, TypeError, HttpProcessingError)


async def _read(part: BodyPartReader, size: int) -> bytes:
    try:
        return await part.read_chunk(size)
    except MULTIPART_ERRORS as exc:
        raise UploadError(f"the multipart body is malformed: {exc}", 400) from None


async def _next_part(reader: Any) -> Any:
    try:
        return await reader.next()
    except MULTIPART_ERRORS as exc:
        raise UploadError(f"the multipart body is malformed: {exc}", 400) from None


async def _part_text(part: BodyPartReader, name: str) -> str:
    raw = bytearray()
    while chunk := await _read(part, 256):
        raw += chunk
        if len(raw) > MAX_FIELD_BYTES:
            raise UploadError(f"the field {name!r} is over {MAX_FIELD_BYTES} bytes", 413)
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UploadError(f"the field {name!r} is not UTF-8 text", 400) from None


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await _read(part, READ_CHUNK):
        yield chunk


def _check(path: Path, limits: UploadLimits) -> MediaInfo:
    """Decode and look for one face (on the low-priority thread)."""
    from engines.create.tracking import MIN_FACE_PX

    info = inspect_media(path, limits)
    if info.kind == "photo":
        check_faces([load_photo(path, max_side=1280)], "photo")
    else:
        times = [info.duration_s * f for f in (0.2, 0.5, 0.8)][:FACE_SAMPLES]
        frames = video_frames(path, times)
        if not frames:
            raise UploadError("no frame of the video could be decoded: it is corrupt", 422)
        # the replica builder's minimum face, in the source's pixels, scaled to the sampled frames'
        scale = max(frames[0].shape[:2]) / max(info.width, info.height, 1)
        check_faces(frames, "video", min_face_px=MIN_FACE_PX * min(1.0, scale))
    return info


async def _create(request: web.Request) -> web.Response:
    service = request.app[AVATARS_KEY]
    if service.uploads >= MAX_UPLOADS_AT_ONCE:
        return web.json_response(
            {"error": "other uploads are being received; try again in a few seconds"},
            status=429,
            headers={"Retry-After": "5"},
        )
    if service.builds.active >= MAX_QUEUED_BUILDS:
        return web.json_response(
            {"error": f"{service.builds.active} builds are already queued; try again later"},
            status=503,
            headers={"Retry-After": "60"},
        )
    if not request.content_type.startswith("multipart/"):
        return _fail(415, "send multipart/form-data with the fields 'name', 'file' and optionally 'voice'")
    service.uploads += 1
    work = service.library.staging_dir("upload")
    try:
        return await _receive_and_queue(request, service, work)
    except UploadError as exc:
        shutil.rmtree(work, ignore_errors=True)
        logger.info("avatars: upload refused (%d): %s", exc.status, exc)
        return _fail(exc.status, str(exc))
    except (LibraryError, VoiceError) as exc:
        shutil.rmtree(work, ignore_errors=True)
        return _library_error(exc)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # a dropped connection, a bug: nothing stays behind
        raise
    finally:
        service.uploads -= 1


async def _receive_and_queue(request: web.Request, service: AvatarService, work: Path) -> web.Response:
    try:
        reader = await request.multipart()
    except MULTIPART_ERRORS as exc:
        raise UploadError(f"the multipart body is malformed: {exc}", 400) from None
    fields: dict[str, str] = {}
    upload: Path | None = None
    kind = fmt = ""
    while (part := await _next_part(reader)) is not None:
        if not isinstance(part, BodyPartReader):
            raise UploadError("nested multipart bodies are not accepted", 400)
        if part.name == "file":
            if upload is not None:
                raise UploadError("send one file per avatar", 400)
            upload = work / "upload"
            kind, fmt, _size = await receive(_part_chunks(part), upload, service.limits)
        elif part.name in ("name", "voice"):
            fields[part.name] = await _part_text(part, part.name)
        else:
            try:
                await part.release()
            except MULTIPART_ERRORS as exc:
                raise UploadError(f"the multipart body is malformed: {exc}", 400) from None
    if upload is None:
        raise UploadError("the upload has no 'file' field (a photo or a video)", 400)
    from engines.library.store import clean_name

    name = clean_name(fields.get("name") or "My avatar")
    voice = fields.get("voice") or None
    if voice is not None:
        voice = service.voices.resolve(voice).id  # VoiceError (400) for an unknown voice
    source = upload.with_name(f"upload.{fmt}")
    upload.rename(source)
    loop = asyncio.get_running_loop()
    info = await loop.run_in_executor(service.checks, _check, source, service.limits)
    job = service.builds.submit(source, info.kind, name, voice, work)
    logger.info(
        "avatars: upload accepted: %s %s %dx%d%s → job %s (avatar %s)",
        kind,
        fmt,
        info.width,
        info.height,
        f", {info.duration_s:.1f} s" if info.kind == "video" else "",
        job.id,
        job.avatar_id,
    )
    return web.json_response(
        {
            "id": job.avatar_id,
            "job": job.id,
            "status": f"/api/avatars/jobs/{job.id}",
            "events": f"/api/avatars/jobs/{job.id}/events",
            "position": job.position,
        },
        status=202,
        headers={JOB_HEADER: job.id},  # behind a balancer, the job's routes follow it to this replica
    )


async def _job(request: web.Request) -> web.Response:
    service = request.app[AVATARS_KEY]
    try:
        job = service.builds.get(request.match_info["job"])
    except LibraryError as exc:
        return _library_error(exc)
    return web.json_response(job.to_json())


async def _job_events(request: web.Request) -> web.StreamResponse:
    service = request.app[AVATARS_KEY]
    job_id = request.match_info["job"]
    try:
        queue = service.builds.subscribe(job_id)
    except LibraryError as exc:
        return _library_error(exc)
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=1024)
    await ws.prepare(request)

    async def drain_incoming() -> None:
        async for _msg in ws:  # the client sends nothing; this notices when it goes away
            pass

    reader = asyncio.get_running_loop().create_task(drain_incoming())
    try:
        while not ws.closed:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            event = getter.result()
            await ws.send_json(event)
            if event.get("state") in ("done", "failed", "cancelled"):
                await ws.close()
                break
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        service.builds.unsubscribe(job_id, queue)
    return ws


def add_avatar_routes(app: web.Application, service: AvatarService, scheduler: Any = None) -> None:
    """Register the routes and start/stop the service with the app; a running build counts in the
    ``scheduler``'s admission control."""
    app[AVATARS_KEY] = service
    if scheduler is not None:
        builds = service.builds
        scheduler.other_load = lambda: BUILD_SESSION_SHARE if builds.running is not None else 0.0
    app.router.add_get("/api/avatars", _list)
    app.router.add_post("/api/avatars", _create)
    app.router.add_get("/api/avatars/jobs/{job}", _job)
    app.router.add_get("/api/avatars/jobs/{job}/events", _job_events)
    app.router.add_get("/api/avatars/{id}", _get)
    app.router.add_get("/api/avatars/{id}/preview.png", _preview)
    app.router.add_delete("/api/avatars/{id}", _delete)
    app.router.add_get("/api/voices", _voices)

    async def on_startup(app: web.Application) -> None:
        app[AVATARS_KEY].start()

    async def on_cleanup(app: web.Application) -> None:
        await app[AVATARS_KEY].close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)


class SessionPressure:
    """True while a live session falls below 24 fresh frames a second: it repeated ``max_repeats_per_s`` or
    more frames in the last second (renders missed their deadlines). A running build is paused meanwhile
    (engines.library.builds).

    A rate, not any single late frame: on a busy machine a session repeats the odd frame with no build at
    all. The ladder's level is not used: it may rest a rung down for a while after a spike, and the frames
    it sends there are fresh.
    """

    def __init__(
        self, sessions: Callable[[], Any], max_repeats_per_s: int = 2, window_s: float = 1.0
    ) -> None:
        self._sessions = sessions  # () -> the live sessions (each with .id and .pacer.stats)
        self.max_repeats = max_repeats_per_s
        self.window_s = window_s
        self._seen: dict[str, deque[tuple[float, int]]] = {}

    def __call__(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        busy = False
        live: dict[str, deque[tuple[float, int]]] = {}
        for session in list(self._sessions()):
            stats = session.pacer.stats
            history = self._seen.get(session.id) or deque()
            history.append((now, stats.repeated))
            while len(history) > 1 and history[1][0] <= now - self.window_s:
                history.popleft()
            live[session.id] = history
            if stats.repeated - history[0][1] >= self.max_repeats:
                busy = True
        self._seen = live
        return busy


def upload_limits_json(limits: UploadLimits) -> dict[str, Any]:
    """The limits the page shows and checks before it uploads (``GET /api/config``)."""
    return {
        "photo_bytes": limits.max_photo_bytes,
        "video_bytes": limits.max_video_bytes,
        "photo_pixels": limits.max_photo_pixels,
        "video_min_s": limits.min_video_s,
        "video_max_s": limits.max_video_s,
    }
