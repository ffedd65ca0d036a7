"""An uploaded photo or video: streamed to disk, checked, and refused with a clear 4xx when it is bad.

The web layer hands :func:`receive` the upload's body as an async iterator of
chunks; nothing holds the whole file in memory. Then :func:`inspect_media`
checks what arrived and :func:`check_faces` looks for exactly one face. Every
refusal is an :class:`UploadError` with an HTTP status and a message that says
what to do, and whatever was written is deleted:

==========================================  ======  ===========================================
problem                                     status  checked by
==========================================  ======  ===========================================
not an image or a video we read             415     the first bytes (magic numbers), then a decode
larger than the limit (photo/video bytes)   413     counted while streaming; stops reading at once
decompression bomb (too many pixels)        413     the header's size, before any pixel is decoded
not enough free disk / disk full mid-write  413     free space before writing, ENOSPC while writing
truncated or corrupt file                   422     full decode (photo); demux + decode (video)
video too short or too long                 422     demuxed duration
no face / several faces                     422     mediapipe face mesh (engines.create.face_env)
==========================================  ======  ===========================================

Accepted: JPEG, PNG and WebP photos; MP4/MOV, WebM/MKV and AVI videos
(anything PyAV decodes inside those containers).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

MediaKind = Literal["photo", "video"]
MiB = 1024 * 1024
SNIFF_BYTES = 64


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be; the README and ``/openapi.json`` state these numbers."""

    max_photo_bytes: int = 20 * MiB
    max_video_bytes: int = 200 * MiB
    max_photo_pixels: int = 40_000_000  # e.g. 8000 x 5000; more is refused before decoding (bomb)
    min_photo_side: int = 128  # a face needs some pixels
    max_video_pixels: int = 3840 * 2160  # per frame (4K)
    min_video_s: float = 3.0
    max_video_s: float = 300.0
    min_free_bytes: int = 256 * MiB  # left free on the library's disk after an upload

    def max_bytes(self, kind: MediaKind) -> int:
        return self.max_photo_bytes if kind == "photo" else self.max_video_bytes


class UploadError(Exception):
    """A refused upload; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class MediaInfo:
    kind: MediaKind
    format: str  # jpeg, png, webp, mp4, webm, avi
    width: int
    height: int
    duration_s: float = 0.0  # videos
    frames: int = 0  # videos: demuxed video packets
    has_audio: bool = False


def sniff(head: bytes) -> tuple[MediaKind, str] | None:
    """(kind, format) from a file's first bytes, or None when it is nothing we read."""
    if head.startswith(b"\xff\xd8\xff"):
        return "photo", "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "photo", "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "photo", "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video", "webm"  # Matroska/WebM (EBML)
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
            return None  # HEIF/AVIF still images: not read here (see the error message)
        return "video", "mp4"
    return None


def _unsupported(head: bytes) -> UploadError:
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
        return UploadError(
            "HEIC/AVIF photos are not supported: send a JPEG or PNG (most phones can export one)", 415
        )
    return UploadError(
        "not an image or a video: send a JPEG, PNG or WebP photo, or an MP4, MOV, WebM, MKV or AVI video", 415
    )


def check_free_space(folder: Path, incoming: int, limits: UploadLimits) -> None:
    """Refuse (413) before writing when ``incoming`` bytes would leave less than the stated reserve free."""
    free = shutil.disk_usage(folder).free
    if free - incoming < limits.min_free_bytes:
        raise UploadError(
            f"the server's disk has no room for this upload ({free // MiB} MiB free, "
            f"{limits.min_free_bytes // MiB} MiB must stay free); try later or a smaller file",
            413,
        )


async def receive(
    chunks: AsyncIterator[bytes],
    dest: Path,
    limits: UploadLimits,
    declared_bytes: int | None = None,
) -> tuple[MediaKind, str, int]:
    """Stream an upload to ``dest``: (kind, format, bytes). On any failure ``dest`` is deleted.

    The type is sniffed from the first bytes before anything else is
    written, the size is counted as it streams (reading stops at the limit),
    and a full disk (``ENOSPC``) is reported as 413.
    """
    check_free_space(dest.parent, declared_bytes or 0, limits)
    head = b""
    kind: MediaKind | None = None
    fmt = ""
    total = 0
    try:
        with dest.open("wb") as out:
            async for chunk in chunks:
                if not chunk:
                    continue
                if kind is None:
                    head += chunk
                    if len(head) < SNIFF_BYTES:
                        continue
                    found = sniff(head)
                    if found is None:
                        raise _unsupported(head)
                    kind, fmt = found
                    if declared_bytes is not None and declared_bytes > limits.max_bytes(kind):
                        raise _too_large(kind, limits)
                    chunk, head = head, b""
                total += len(chunk)
                if kind is not None and total > limits.max_bytes(kind):
                    raise _too_large(kind, limits)
                out.write(chunk)
            if kind is None:  # the whole file was shorter than the sniff window
                found = sniff(head)
                if found is None or not head:
                    raise _unsupported(head) if head else UploadError("the upload is empty", 422)
                kind, fmt = found
                total = len(head)
                out.write(head)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        _remove(dest)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UploadError(
                "the server's disk filled up during the upload; nothing was kept (try later or a smaller file)",
                413,
            ) from None
        raise
    except BaseException:
        _remove(dest)
        raise
    return kind, fmt, total


def _too_large(kind: MediaKind, limits: UploadLimits) -> UploadError:
    return UploadError(f"the {kind} is over the {human_bytes(limits.max_bytes(kind))} limit for {kind}s", 413)


def human_bytes(n: int) -> str:
    """``20 MiB``, ``64 KiB``, ``512 B``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --------------------------------------------------------------------------- inspection


def inspect_media(path: Path, limits: UploadLimits) -> MediaInfo:
    """Check a received file completely (type, pixels, integrity, duration); raises :class:`UploadError`."""
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    found = sniff(head)
    if found is None:
        raise _unsupported(head)
    kind, fmt = found
    return _inspect_photo(path, fmt, limits) if kind == "photo" else _inspect_video(path, fmt, limits)


def _inspect_photo(path: Path, fmt: str, limits: UploadLimits) -> MediaInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here
            im = Image.open(path)  # reads the header only
        with im:
            width, height = im.size
            if width * height > limits.max_photo_pixels:
                raise UploadError(
                    f"the photo is {width}x{height} pixels, over the {limits.max_photo_pixels / 1e6:.0f} "
                    "megapixel limit (a decompression bomb, or simply too big: scale it down)",
                    413,
                )
            if min(width, height) < limits.min_photo_side:
                raise UploadError(
                    f"the photo is {width}x{height} pixels; a face needs at least "
                    f"{limits.min_photo_side} pixels on each side",
                    422,
                )
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im.load()  # decodes every pixel: a truncated file raises here
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadError(f"the photo is a decompression bomb: {exc}", 413) from None
    except UnidentifiedImageError:
        raise UploadError(
            f"the file looks like a {fmt.upper()} but cannot be read as an image", 415
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:  # "image file is truncated", broken chunks
        raise UploadError(
            f"the photo is truncated or corrupt ({exc}); send the whole file again", 422
        ) from None
    return MediaInfo("photo", fmt, width, height)


def _inspect_video(path: Path, fmt: str, limits: UploadLimits) -> MediaInfo:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise UploadError(
            f"the video cannot be opened ({_short(exc)}): it is truncated, corrupt or not a video", 422
        ) from None
    with container:
        if not container.streams.video:
            raise UploadError("the file has no video track", 415)
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width <= 0 or height <= 0:
            raise UploadError("the video's frame size is unknown: it is corrupt", 422)
        if width * height > limits.max_video_pixels:
            raise UploadError(
                f"the video's frames are {width}x{height}, over the {limits.max_video_pixels / 1e6:.1f} "
                "megapixel limit (4K); scale it down",
                413,
            )
        has_audio = bool(container.streams.audio)
        declared = container.duration / 1e6 if container.duration else None
        if declared is not None and declared > limits.max_video_s * 1.5:
            raise UploadError(_too_long(declared, limits), 422)
        first, last, packets, decoded = None, None, 0, 0
        tb = float(stream.time_base) if stream.time_base else 0.0
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                packets += 1
                t = float(packet.pts) * tb
                first = t if first is None else min(first, t)
                last = t if last is None else max(last, t)
                if last - first > limits.max_video_s * 1.5:
                    break  # clearly too long: stop reading
                if decoded < 3:  # the first frames must decode
                    decoded += len(packet.decode())
        except (av.error.FFmpegError, ValueError) as exc:
            raise UploadError(f"the video is truncated or corrupt ({_short(exc)})", 422) from None
    if packets == 0 or decoded == 0:
        raise UploadError("the video has no decodable frames: it is truncated or corrupt", 422)
    assert first is not None and last is not None
    rate = float(stream.average_rate) if stream.average_rate else 25.0
    span = last - first + 1.0 / max(rate, 1.0)
    if declared is not None and span < 0.9 * declared - 0.5:
        raise UploadError(
            f"the video is truncated: its header promises {declared:.1f} s but only {span:.1f} s are there",
            422,
        )
    if span > limits.max_video_s:
        raise UploadError(_too_long(span, limits), 422)
    if span < limits.min_video_s:
        raise UploadError(
            f"the video is {span:.1f} s long; record at least {limits.min_video_s:.0f} s (30-60 s is best)",
            422,
        )
    return MediaInfo(
        "video", fmt, width, height, duration_s=round(span, 3), frames=packets, has_audio=has_audio
    )


def _too_long(seconds: float, limits: UploadLimits) -> str:
    return f"the video is {seconds:.0f} s long; at most {limits.max_video_s:.0f} s are accepted (30-60 s is best)"


def _short(exc: BaseException) -> str:
    return str(exc).split(": '/")[0][:160]


# --------------------------------------------------------------------------- frames and faces


def load_photo(path: Path, max_side: int = 2048) -> np.ndarray:
    """uint8 [H, W, 3] RGB, turned upright from the EXIF orientation and scaled to at most ``max_side``."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        upright = ImageOps.exif_transpose(im).convert("RGB")
    if max(upright.size) > max_side:
        upright.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(upright, dtype=np.uint8)


def video_frames(path: Path, times_s: list[float], max_side: int = 1280) -> list[np.ndarray]:
    """RGB uint8 frames nearest to each of ``times_s`` (one decoding pass, upright, scaled to ``max_side``)."""
    from engines.create.video_io import iter_frames, probe_video

    fps = probe_video(path).fps
    wanted = {max(0, round(t * fps)) for t in times_s}
    return [frame.rgb for frame in iter_frames(path, max_side=max_side, indices=wanted)]


def check_faces(
    images: list[np.ndarray], what: str = "photo", min_ratio: float = 0.35, min_face_px: float = 0.0
) -> None:
    """Exactly one face in each image, by the photo pipeline's rule; 422 otherwise.

    A second face counts when it is at least ``min_ratio`` as wide as the
    biggest (:class:`engines.create.photo.PhotoOptions`). One mediapipe
    process looks at all the images; for a video they are frames sampled
    across it, and a bad frame is named by its position. A face narrower than
    ``min_face_px`` (cheek to cheek, in the images' pixels) is refused too: the
    replica builder needs :data:`engines.create.tracking.MIN_FACE_PX` in the source.
    """
    from engines.create.face_env import FaceEnvError
    from engines.create.photo import CHEEK_L, CHEEK_R
    from engines.create.tracking import FaceTracker

    try:
        with FaceTracker(max_faces=4, mode="image") as tracker:
            found = [tracker.process(image) for image in images]
    except FaceEnvError as exc:
        raise UploadError(f"the face detector could not run on the server: {exc}", 503) from None
    for k, faces in enumerate(found):
        where = what if len(images) == 1 else f"{what} (sampled frame {k + 1} of {len(images)})"
        if not faces:
            raise UploadError(
                f"no face found in the {where}: face the camera in good light, one person only", 422
            )
        widths = [float(np.ptp(face[:468, 0])) for face in faces]
        several = sum(1 for w in widths if w >= min_ratio * max(widths))
        if several > 1:
            raise UploadError(
                f"{several} faces found in the {where}: the avatar needs exactly one person", 422
            )
        face = faces[int(np.argmax(widths))]
        cheeks = float(np.linalg.norm(face[CHEEK_L, :2] - face[CHEEK_R, :2]))
        if cheeks < min_face_px:
            raise UploadError(
                f"the face in the {where} is {cheeks:.0f} px wide cheek to cheek; at least "
                f"{min_face_px:.0f} px are needed: film closer (head and shoulders filling the frame)",
                422,
            )
