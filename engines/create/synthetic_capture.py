"""Synthetic captures with known answers: a talking face whose every expression and head pose is known.

A real photo (the public-domain astronaut portrait by default) is animated
with known ARKit-style expression coefficients and a known head pose, over
real speech from the bundled Piper voice, and written as an MP4 with audio.
The replica builder must recover the coefficients and the pose from the
pixels alone; this module keeps the truth beside the video
(``capture.npz`` + ``capture.json``).

The face is drawn by a **piecewise-affine warp** of the photo's mediapipe
mesh, a renderer that shares nothing with the Gaussian-splat engine: the
photo's 468 mesh landmarks plus a ring of head points (hair, ears; moving
with the head) and a ring of static points (neck, shoulders, background)
are triangulated once (Delaunay on the photo); every frame moves the
landmarks by the expression fields below and the head pose, and each
destination triangle is filled, far to near, with the photo's pixels mapped
by that triangle's affine map. The inner mouth is not taken from the photo:
a cavity with upper and lower teeth is painted behind the lips, so the mouth
shows what an open mouth shows and the lips close completely at rest.

Expression fields are displacements of the landmarks defined on the face's
geometry (mouth and eye frames, in units of the mouth or eye half width),
written for this module only (not the avatar rig):

* rest (always on): the photo's inner lips meet at their mid-line;
* ``jawOpen``: lower lip, chin and jaw line move down;
* ``mouthLowerDownLeft/Right``: the lower lip moves down on one side;
* ``mouthSmileLeft/Right``, ``mouthStretchLeft/Right``: a mouth corner moves out (and up / down);
* ``mouthPucker``, ``mouthFunnel``: the lips move towards the centre (funnel also parts them);
* ``eyeBlinkLeft/Right``: the upper lid comes down to the lower lid;
* ``browInnerUp``: the inner brows and the skin above them rise.

Mouth coefficients come from Piper's phoneme alignments through the same
alignment path the server uses (:class:`engines.a2v.visemes.AlignmentTrack`);
blinks every few seconds, brow raises and the head pose (pitch, yaw, roll:
sums of slow sinusoids) from a seeded schedule. The first ``REST_S`` seconds
show the rest face: frontal, lips closed, eyes open, no speech.

Command line (writes ``OUT/capture.mp4``, ``capture.npz``, ``capture.json``)::

    python -m engines.create.synthetic_capture OUT --seconds 12
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.create.photo import (
    BROW_L,
    BROW_R,
    EYE_L_LOWER,
    EYE_L_UPPER,
    EYE_R_LOWER,
    EYE_R_UPPER,
    FACE_OVAL,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER,
    N_MESH,
    _bilinear,
    _points_in_polygon,
)

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

FPS = 25
REST_S = 1.5  # rest face at the start: frontal, lips closed, no speech
SCRIPT = (
    "Hello, I am recording a short video so that my avatar can speak like me. "
    "The quick brown fox jumps over the lazy dog. "
    "Please pass me the blue map; it shows where we will be flying tomorrow morning. "
    "Wow, what a beautiful view of the ocean from up here! "
    "I usually open my mouth wide when I say father, and I round my lips for you and who."
)
#: Channels whose per-frame values the capture knows (ARKit names).
CHANNELS: tuple[str, ...] = (
    "jawOpen", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "eyeBlinkLeft", "eyeBlinkRight", "browInnerUp",
)  # fmt: skip
POSE_CHANNELS = ("headPitch", "headYaw", "headRoll")
#: Bumped whenever the same parameters would draw a different capture (test caches key on it).
VERSION = 2

TEETH = np.array([226.0, 220.0, 205.0])
TEETH_LOWER = np.array([205.0, 198.0, 182.0])
CAVITY = np.array([62.0, 20.0, 24.0])
TONGUE = np.array([160.0, 70.0, 78.0])


@dataclass(frozen=True)
class SyntheticCapture:
    """A synthetic clip and its truth (frame ``k`` covers media time ``[k/fps, (k+1)/fps)``)."""

    video: Path  # MP4: H.264 yuv420p + AAC mono
    fps: float
    size: tuple[int, int]  # (H, W)
    coefficients: dict[str, np.ndarray]  # ARKit name -> [T] float32
    pose: np.ndarray  # [T, 3] float32 (headPitch, headYaw, headRoll) radians, the rig's conventions
    landmarks: np.ndarray  # [T, 478, 2] float32 pixels: where each mesh point is drawn
    text: str
    sample_rate: int
    rest_frames: int  # frames 0..rest_frames-1 show the rest face

    @property
    def frames(self) -> int:
        return int(self.pose.shape[0])

    def matrix(self, channels: tuple[str, ...] = CHANNELS) -> np.ndarray:
        """[T, len(channels)] float32 of the known coefficients."""
        return np.stack([self.coefficients[c] for c in channels], axis=1).astype(np.float32)


# ------------------------------------------------------------------ geometry


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass
class _Frame2D:
    """A feature's 2D frame in the photo: origin, unit axes, half width (pixels)."""

    origin: np.ndarray  # [2]
    ex: np.ndarray  # [2] unit, image-left corner to image-right corner
    ey: np.ndarray  # [2] unit, down
    a: float

    @staticmethod
    def between(left: np.ndarray, right: np.ndarray) -> _Frame2D:
        ex = right - left
        a = float(np.linalg.norm(ex)) / 2.0
        ex = ex / (2.0 * a)
        return _Frame2D((left + right) / 2.0, ex, np.array([-ex[1], ex[0]]), a)

    def local(self, p: np.ndarray) -> np.ndarray:
        d = (p - self.origin) / self.a
        return np.stack([d @ self.ex, d @ self.ey], axis=1)

    def world(self, d: np.ndarray) -> np.ndarray:
        """[K, 2] local displacement → [K, 2] pixels."""
        return (d[:, :1] * self.ex + d[:, 1:2] * self.ey) * self.a


class ExpressionFields:
    """Per-channel landmark displacement fields [P, 2] (pixels at coefficient 1) over the given points."""

    def __init__(self, lm: np.ndarray, points: np.ndarray) -> None:
        """``lm`` [478, 2+] the photo's landmarks; ``points`` [P, 2] where the fields are evaluated."""
        lm2 = np.asarray(lm, np.float64)[:, :2]
        p = np.asarray(points, np.float64)
        self.fields: dict[str, np.ndarray] = {}
        m = _Frame2D.between(lm2[78], lm2[308])
        loc = m.local(p)
        mx, my = loc[:, 0], loc[:, 1]
        up_c = m.local(lm2[list(LIPS_INNER_UPPER)])
        lo_c = m.local(lm2[list(LIPS_INNER_LOWER)])
        up_c, lo_c = up_c[np.argsort(up_c[:, 0])], lo_c[np.argsort(lo_c[:, 0])]
        up = np.interp(mx, up_c[:, 0], up_c[:, 1])
        lo = np.interp(mx, lo_c[:, 0], lo_c[:, 1])
        mid = 0.5 * (up + lo)
        gap = np.maximum(lo - up, 0.0) * (np.abs(mx) < 1.0)
        lower = my > mid
        lateral = np.exp(-((np.maximum(np.abs(mx) - 1.0, 0.0) / 0.35) ** 2))
        band_u = np.where(lower, 0.0, np.exp(-((np.maximum(up - my, 0.0) / 0.45) ** 2))) * lateral
        band_l = np.where(lower, np.exp(-((np.maximum(my - lo, 0.0) / 0.45) ** 2)), 0.0) * lateral
        zero = np.zeros_like(mx)

        def v(dx: np.ndarray | float, dy: np.ndarray | float) -> np.ndarray:
            return m.world(np.stack([dx + zero, dy + zero], axis=1))

        # rest: the inner lips meet at their mid-line
        # (each lip passes the mid-line a little, so no pixel of the seam shows what lies behind)
        seal = gap / 2 + 0.05 * np.sqrt(np.clip(1.0 - mx * mx, 0.0, 1.0))
        self.rest = v(0.0, band_u * seal - band_l * seal)
        # jaw: everything below the mid-line moves down, fading towards the ears and above the mouth
        w_jaw = np.where(lower, _smoothstep((my - mid) / 0.25 + 0.2), 0.0)
        w_jaw = w_jaw * np.exp(-((np.maximum(np.abs(mx) - 1.3, 0.0) / 1.2) ** 2))
        self.fields["jawOpen"] = v(0.0, 0.95 * w_jaw)
        inside = np.sqrt(np.clip(1.0 - mx * mx, 0.0, 1.0))
        side_l = np.clip(0.5 + mx, 0.0, 1.0)  # subject's left = image right (+x)
        for side, sgn, half in (("Left", 1.0, side_l), ("Right", -1.0, 1.0 - side_l)):
            corner = np.exp(-(((mx - sgn) / 0.6) ** 2) - (my / 0.55) ** 2)
            self.fields[f"mouthSmile{side}"] = v(sgn * 0.22 * corner, -0.22 * corner)
            self.fields[f"mouthStretch{side}"] = v(sgn * 0.25 * corner, 0.06 * corner)
            self.fields[f"mouthLowerDown{side}"] = v(0.0, 0.3 * band_l * half * (0.3 + 0.7 * inside))
        lips = band_u + band_l
        squeeze = -np.clip(mx, -1.2, 1.2) * lips
        self.fields["mouthPucker"] = v(0.3 * squeeze, 0.0)
        self.fields["mouthFunnel"] = v(
            0.18 * squeeze, (-0.22 * band_u + 0.22 * band_l) * (0.3 + 0.7 * inside)
        )
        # eyes: the upper lid comes down to the lower lid; skin above follows with a fall-off
        for side, upper_i, lower_i, brow_i in (
            ("Left", EYE_L_UPPER, EYE_L_LOWER, BROW_L),
            ("Right", EYE_R_UPPER, EYE_R_LOWER, BROW_R),
        ):
            e = _Frame2D.between(lm2[upper_i[0]], lm2[upper_i[-1]])
            el = e.local(p)
            eu = e.local(lm2[list(upper_i)])
            ed = e.local(lm2[list(lower_i)])
            eu, ed = eu[np.argsort(eu[:, 0])], ed[np.argsort(ed[:, 0])]
            eup = np.interp(el[:, 0], eu[:, 0], eu[:, 1])
            elo = np.interp(el[:, 0], ed[:, 0], ed[:, 1])
            egap = np.maximum(elo - eup, 0.0) * (np.abs(el[:, 0]) < 1.0)
            emid = 0.5 * (eup + elo)
            elat = np.exp(-((np.maximum(np.abs(el[:, 0]) - 1.0, 0.0) / 0.3) ** 2))
            above = el[:, 1] <= emid
            w_up = np.where(above, np.exp(-((np.maximum(eup - el[:, 1], 0.0) / 0.35) ** 2)), 0.0) * elat
            w_lo = np.where(~above, np.exp(-((np.maximum(el[:, 1] - elo, 0.0) / 0.2) ** 2)), 0.0) * elat
            self.fields[f"eyeBlink{side}"] = e.world(
                np.stack([zero, 0.85 * egap * w_up - 0.15 * egap * w_lo], axis=1)
            )
            # brow: inner end rises, with the skin around it
            brow = lm2[list(brow_i)]
            d = np.linalg.norm(p[:, None, :] - brow[None, :, :], axis=2)
            t = np.argmin(d, axis=1) / (len(brow_i) - 1)
            w = np.exp(-((d.min(axis=1) / (0.8 * e.a)) ** 2)) * (el[:, 1] < eup - 0.2)
            rise = np.stack([zero, -0.35 * w * (1.0 - t) ** 1.5], axis=1)
            self.fields["browInnerUp"] = self.fields.get("browInnerUp", 0.0) + e.world(rise)

    def displace(self, values: dict[str, float]) -> np.ndarray:
        """Rest + Σ value · field → [P, 2] pixels."""
        out = self.rest.copy()
        for name, value in values.items():
            if value and name in self.fields:
                out += float(value) * self.fields[name]
        return out


# ------------------------------------------------------------------ the warp renderer


class MeshWarp:
    """Piecewise-affine warp of a photo over a fixed triangulation of its landmarks (painter's order)."""

    def __init__(self, photo: np.ndarray, src: np.ndarray, triangles: np.ndarray) -> None:
        self.photo = np.asarray(photo, np.float32)  # [H, W, 3]
        self.src = np.asarray(src, np.float64)  # [V, 2] pixel positions in the photo
        self.tri = np.asarray(triangles, np.int64)  # [F, 3]

    def draw(
        self,
        out: np.ndarray,  # [H, W, 3] float32, drawn into
        dst: np.ndarray,  # [V, 2] destination pixel positions
        depth: np.ndarray,  # [V] destination depth (larger = farther)
        which: np.ndarray,  # [F] bool: triangles to draw
    ) -> None:
        h, w = out.shape[:2]
        tris = np.flatnonzero(which)
        order = tris[np.argsort(-depth[self.tri[tris]].mean(axis=1), kind="stable")]
        for f in order:
            i, j, k = self.tri[f]
            d0, d1, d2 = dst[i], dst[j], dst[k]
            x0 = max(math.floor(min(d0[0], d1[0], d2[0]) - 0.5), 0)
            x1 = min(math.ceil(max(d0[0], d1[0], d2[0]) - 0.5), w - 1)
            y0 = max(math.floor(min(d0[1], d1[1], d2[1]) - 0.5), 0)
            y1 = min(math.ceil(max(d0[1], d1[1], d2[1]) - 0.5), h - 1)
            if x1 < x0 or y1 < y0:
                continue
            den = (d1[1] - d2[1]) * (d0[0] - d2[0]) + (d2[0] - d1[0]) * (d0[1] - d2[1])
            if abs(den) < 1e-9:
                continue
            gy, gx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
            px, py = gx.ravel() + 0.5, gy.ravel() + 0.5
            b0 = ((d1[1] - d2[1]) * (px - d2[0]) + (d2[0] - d1[0]) * (py - d2[1])) / den
            b1 = ((d2[1] - d0[1]) * (px - d2[0]) + (d0[0] - d2[0]) * (py - d2[1])) / den
            b2 = 1.0 - b0 - b1
            inside = (b0 >= -1e-6) & (b1 >= -1e-6) & (b2 >= -1e-6)
            if not inside.any():
                continue
            s = self.src[[i, j, k]]
            sx = b0[inside] * s[0, 0] + b1[inside] * s[1, 0] + b2[inside] * s[2, 0]
            sy = b0[inside] * s[0, 1] + b1[inside] * s[1, 1] + b2[inside] * s[2, 1]
            out[gy.ravel()[inside], gx.ravel()[inside]] = _bilinear(self.photo, np.stack([sx, sy], axis=1))


def paint_mouth(out: np.ndarray, lm: np.ndarray, mouth_a: float) -> None:
    """Cavity, tongue and teeth inside the (destination) outer-lip polygon; the lips are drawn over it."""
    h, w = out.shape[:2]
    outer = lm[list(LIPS_OUTER)]
    x0, y0 = np.floor(outer.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(outer.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if x1 <= x0 or y1 <= y0:
        return
    gy, gx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    px, py = gx.ravel() + 0.5, gy.ravel() + 0.5
    sel = _points_in_polygon(np.stack([px, py], axis=1), outer)
    if not sel.any():
        return
    m = _Frame2D.between(lm[78], lm[308])
    loc = m.local(np.stack([px[sel], py[sel]], axis=1))
    up_c = m.local(lm[list(LIPS_INNER_UPPER)])
    lo_c = m.local(lm[list(LIPS_INNER_LOWER)])
    up_c, lo_c = up_c[np.argsort(up_c[:, 0])], lo_c[np.argsort(lo_c[:, 0])]
    up = np.interp(loc[:, 0], up_c[:, 0], up_c[:, 1])
    lo = np.interp(loc[:, 0], lo_c[:, 0], lo_c[:, 1])
    scale = mouth_a / m.a  # teeth keep their size when the corners move
    teeth_w = np.abs(loc[:, 0]) < 0.8
    col = np.broadcast_to(CAVITY, (len(loc), 3)).copy()
    tongue = loc[:, 1] > lo - 0.25 * scale
    col[tongue] = TONGUE
    col[teeth_w & (loc[:, 1] > lo - 0.12 * scale)] = TEETH_LOWER
    col[teeth_w & (loc[:, 1] < up + 0.2 * scale)] = TEETH
    # a soft dark edge at the corners
    dark = np.clip((np.abs(loc[:, 0]) - 0.75) / 0.25, 0.0, 1.0)[:, None]
    col = col * (1 - 0.6 * dark)
    out[gy.ravel()[sel], gx.ravel()[sel]] = col


def paint_tongue(out: np.ndarray, lm: np.ndarray, mouth_a: float, amount: float) -> None:
    """A tongue out over the lower lip: an ellipse from the mouth's centre down by ``amount`` × 0.9 mouth half widths."""
    h, w = out.shape[:2]
    m = _Frame2D.between(lm[78], lm[308])
    top = 0.5 * (lm[13] + lm[14])
    length = 0.9 * amount * mouth_a
    c = top + 0.5 * length * m.ey
    rx, ry = 0.45 * mouth_a, 0.5 * length + 0.15 * mouth_a
    x0, y0 = np.floor(c - max(rx, ry) - 1).astype(int)
    x1, y1 = np.ceil(c + max(rx, ry) + 1).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    gy, gx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    d = np.stack([gx.ravel() + 0.5, gy.ravel() + 0.5], axis=1) - c
    u, v = d @ m.ex / rx, d @ m.ey / ry
    r = u * u + v * v
    sel = r < 1.0
    shade = (1.0 - 0.25 * r[sel])[:, None]
    out[gy.ravel()[sel], gx.ravel()[sel]] = TONGUE * shade


# ------------------------------------------------------------------ schedule


def _speech(text: str, seconds: float, progress: Progress) -> tuple[np.ndarray, int, np.ndarray, str]:
    """(pcm [N] float32, sample rate, a2v frames [T, C] at FPS, the text actually spoken)."""
    from engines.a2v.visemes import AlignmentTrack
    from engines.tts import PiperTTS

    tts = PiperTTS.load()
    rate = tts.sample_rate
    total = round(seconds * rate)
    lead = round(REST_S * rate)
    track = AlignmentTrack(FPS)
    frames = [track.push_silence(lead, rate)]
    pcm = [np.zeros(lead, np.float32)]
    used = lead
    spoken: list[str] = []
    sentences = [s.strip() + "." for s in text.replace("!", ".").replace("?", ".").split(".") if s.strip()]
    for sentence in sentences:
        for chunk in tts.synthesize(sentence):
            if used + len(chunk.pcm) > total:
                break
            frames.append(track.push(chunk.alignments, rate))
            pcm.append(chunk.pcm)
            used += len(chunk.pcm)
            spoken.append(sentence)
        progress(f"speech: {used / rate:.1f} s")
    frames.append(track.push_silence(total - used, rate))
    pcm.append(np.zeros(total - used, np.float32))
    frames.append(track.flush())
    return np.concatenate(pcm), rate, np.concatenate(frames), " ".join(spoken)


def _schedule(n: int, seed: int, max_yaw_deg: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Blinks, brow raises and the head pose for ``n`` frames."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    rest = int(REST_S * FPS)
    out: dict[str, np.ndarray] = {}
    blink = np.zeros(n)
    k = rest + int(rng.integers(5, 15))
    while k < n:
        shape = np.array([0.35, 0.8, 1.0, 0.75, 0.35])
        m = min(len(shape), n - k)
        blink[k : k + m] = np.maximum(blink[k : k + m], shape[:m])
        k += int(rng.uniform(2.0, 4.0) * FPS)
    out["eyeBlinkLeft"] = blink
    out["eyeBlinkRight"] = blink.copy()
    brow = np.zeros(n)
    for _ in range(max(1, n // (5 * FPS))):
        c = rng.uniform(REST_S + 1.0, max(REST_S + 1.5, t[-1] - 0.5))
        brow += 0.8 * np.exp(-(((t - c) / 0.45) ** 2))
    out["browInnerUp"] = np.clip(brow, 0.0, 1.0)
    ramp = _smoothstep((t - REST_S) / 1.0)
    phase = rng.uniform(0, 2 * np.pi, 6)
    y = math.radians(max_yaw_deg)
    yaw = y * (0.75 * np.sin(2 * np.pi * t / 6.5 + phase[0]) + 0.25 * np.sin(2 * np.pi * t / 2.1 + phase[1]))
    pitch = (
        0.5
        * y
        * (0.7 * np.sin(2 * np.pi * t / 4.7 + phase[2]) + 0.3 * np.sin(2 * np.pi * t / 1.7 + phase[3]))
    )
    roll = 0.3 * y * np.sin(2 * np.pi * t / 5.3 + phase[4])
    pose = np.stack([pitch, yaw, roll], axis=1) * ramp[:, None]
    return out, pose


# ------------------------------------------------------------------ the capture


def _rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """The head rotation in the rig's convention (:func:`engines.splat.rig.euler_matrix`), float64 [3, 3]."""
    from engines.splat.rig import euler_matrix

    return euler_matrix(np.array([pitch]), np.array([yaw]), np.array([roll]))[0].astype(np.float64)


class WarpedFace:
    """A photo's face, ready to draw with any expression and head pose (the capture's renderer)."""

    def __init__(
        self, photo: np.ndarray | None = None, size: int = 512, progress: Progress | None = None
    ) -> None:
        from scipy.spatial import Delaunay

        from engines.create.photo import PhotoOptions, astronaut_image, crop_box, crop_photo, find_face

        say = progress or (lambda msg: logger.info("synthetic capture: %s", msg))
        image = astronaut_image() if photo is None else np.asarray(photo, np.uint8)
        opts = PhotoOptions(size=size, crop_scale=3.0)
        src_lm = find_face(image, opts, notify=say)
        box = crop_box(src_lm, image.shape, opts)
        crop = crop_photo(image, box, size)
        sc = size / box[2]
        lm = src_lm.copy()
        lm[:, 0] = (src_lm[:, 0] - box[0]) * sc
        lm[:, 1] = (src_lm[:, 1] - box[1]) * sc
        lm[:, 2] = src_lm[:, 2] * sc
        say("face mesh")
        self.size = size
        self.lm = lm

        # vertices: 478 landmarks, a head ring (moves with the head), a static ring and the image border
        oval = lm[list(FACE_OVAL), :2]
        centre = oval.mean(axis=0)
        head_ring = centre + (oval - centre) * np.array([1.25, 1.22])
        far_ring = centre + (oval - centre) * np.array([1.9, 1.6])
        edge = np.linspace(0, size, 9)
        border = np.unique(
            np.concatenate(
                [
                    np.stack([edge, np.zeros(9)], 1),
                    np.stack([edge, np.full(9, size)], 1),
                    np.stack([np.zeros(9), edge], 1),
                    np.stack([np.full(9, size), edge], 1),
                ]
            ),
            axis=0,
        )
        self.n_lm = n_lm = len(lm)
        self.verts2 = verts2 = np.concatenate([lm[:, :2], head_ring, far_ring, border])
        n_head = n_lm + len(head_ring)
        mesh_ids = np.r_[np.arange(N_MESH), np.arange(n_lm, len(verts2))]  # iris points stay out of the mesh
        tri = mesh_ids[Delaunay(verts2[mesh_ids]).simplices]
        face_w = float(np.linalg.norm(lm[454, :2] - lm[234, :2]))
        self.f = f = 2.5 * size
        z0 = f * 0.14 / face_w  # metres to the nose tip, the face 14 cm wide
        z_px = np.concatenate([lm[:, 2] - lm[1, 2], np.full(len(head_ring), 0.45 * face_w),
                               np.full(len(verts2) - n_head, 1.2 * face_w)])  # fmt: skip
        self.depth = depth = z0 + z_px * z0 / f
        self.cam_c = cam_c = np.array([size / 2, size / 2])
        self.verts3 = np.concatenate([(verts2 - cam_c) * depth[:, None] / f, depth[:, None]], axis=1)
        self.pivot = np.array([*((lm[1, :2] - cam_c) * z0 / f), z0 + 0.6 * 0.14])
        self.pivot[1] = (lm[152, 1] - cam_c[1]) * z0 / f  # at the chin's height, behind the face
        self.moving = np.arange(len(verts2)) < n_head

        # which triangles: the inner-mouth hole is painted, not warped
        inner = np.concatenate([lm[list(LIPS_INNER_UPPER), :2], lm[list(LIPS_INNER_LOWER), :2][::-1][1:-1]])
        tc = verts2[tri].mean(axis=1)
        in_mouth = _points_in_polygon(tc, inner) & np.all(tri < N_MESH, axis=1)
        self.static_tri = ~np.any(self.moving[tri], axis=1)
        self.face_tri = ~in_mouth & ~self.static_tri
        self.fields = ExpressionFields(lm, lm[:, :2])
        self.mouth_a = float(np.linalg.norm(lm[308, :2] - lm[78, :2])) / 2
        # the photo's inner-lip contour may lie on its teeth by a pixel: sample the lips a little outside it
        src = verts2.copy()
        m_ey = _Frame2D.between(lm[78, :2], lm[308, :2]).ey
        src[list(LIPS_INNER_UPPER[1:-1])] -= 0.1 * self.mouth_a * m_ey
        src[list(LIPS_INNER_LOWER[1:-1])] += 0.1 * self.mouth_a * m_ey
        self.warp = MeshWarp(crop, src, tri)

    def draw(
        self, values: dict[str, float], pose: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 [H, W, 3], landmarks [478, 2] as drawn) for expression ``values`` and ``pose``.

        Besides :data:`CHANNELS`, ``tongueOut`` (0..1) draws the tongue out over the lower lip and a
        negative ``eyeBlink*`` opens the eyes wider.
        """
        n_lm, f, cam_c = self.n_lm, self.f, self.cam_c
        img = np.zeros((self.size, self.size, 3), np.float32) if out is None else out
        disp = self.fields.displace(values)
        v2 = self.verts2.copy()
        v2[:n_lm] += disp
        v3 = self.verts3.copy()
        v3[:n_lm, :2] = (v2[:n_lm] - cam_c) * self.depth[:n_lm, None] / f
        if pose is not None:
            r = _rotation(*np.asarray(pose, np.float64))
            v3[self.moving] = (v3[self.moving] - self.pivot) @ r.T + self.pivot
        dst = v3[:, :2] / v3[:, 2:3] * f + cam_c
        self.warp.draw(img, dst, v3[:, 2], self.static_tri)
        paint_mouth(img, dst[:n_lm], self.mouth_a)
        self.warp.draw(img, dst, v3[:, 2], self.face_tri)
        tongue = float(values.get("tongueOut", 0.0))
        if tongue > 0:
            paint_tongue(img, dst[:n_lm], self.mouth_a, tongue)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), dst[:n_lm].astype(np.float32)


def expression_photo(
    values: dict[str, float], photo: np.ndarray | None = None, size: int = 512
) -> np.ndarray:
    """One still of the (astronaut) face with an expression, e.g. ``{"jawOpen": 0.8, "tongueOut": 1,
    "eyeBlinkLeft": -0.4, "eyeBlinkRight": -0.4}``: a test photo for the one-shot path's rest face."""
    return WarpedFace(photo, size).draw(values)[0]


def make_synthetic_capture(
    out_dir: str | Path,
    seconds: float = 12.0,
    size: int = 512,
    seed: int = 0,
    max_yaw_deg: float = 12.0,
    text: str = SCRIPT,
    photo: np.ndarray | None = None,
    progress: Progress | None = None,
) -> SyntheticCapture:
    """Render a synthetic capture into ``out_dir`` (``capture.mp4``, ``capture.npz``, ``capture.json``)."""
    from engines.create.mp4 import write_mp4

    say = progress or (lambda msg: logger.info("synthetic capture: %s", msg))
    if seconds < REST_S + 1.0:
        raise ValueError(f"seconds must be at least {REST_S + 1.0}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    face = WarpedFace(photo, size, say)
    pcm, rate, a2v, spoken = _speech(text, seconds, say)
    from engines.a2v.visemes import A2V_CHANNELS

    n = len(a2v)
    coeffs = {c: np.zeros(n) for c in CHANNELS}
    for c in CHANNELS:
        if c in A2V_CHANNELS:
            coeffs[c] = a2v[:, A2V_CHANNELS.index(c)].astype(np.float64)
    extra, pose = _schedule(n, seed, max_yaw_deg)
    coeffs.update(extra)
    truth_lm = np.zeros((n, face.n_lm, 2), np.float32)

    def frames() -> Iterator[np.ndarray]:
        img = np.zeros((size, size, 3), np.float32)
        for k in range(n):
            frame, truth_lm[k] = face.draw({c: float(coeffs[c][k]) for c in CHANNELS}, pose[k], img)
            if k % 50 == 0:
                say(f"frame {k}/{n}")
            yield frame

    video = out / "capture.mp4"
    write_mp4(video, frames(), FPS, pcm, rate)
    cap = SyntheticCapture(
        video=video,
        fps=float(FPS),
        size=(size, size),
        coefficients={c: v.astype(np.float32) for c, v in coeffs.items()},
        pose=pose.astype(np.float32),
        landmarks=truth_lm,
        text=spoken,
        sample_rate=rate,
        rest_frames=int(REST_S * FPS),
    )
    _save(cap, out, seed, max_yaw_deg)
    say(f"wrote {video} ({n} frames)")
    return cap


def _save(cap: SyntheticCapture, out: Path, seed: int, max_yaw_deg: float) -> None:
    np.savez_compressed(
        out / "capture.npz",
        channels=np.array(CHANNELS),
        coefficients=cap.matrix(),
        pose=cap.pose,
        landmarks=cap.landmarks,
    )
    meta: dict[str, Any] = {
        "video": cap.video.name,
        "fps": cap.fps,
        "size": list(cap.size),
        "text": cap.text,
        "sample_rate": cap.sample_rate,
        "rest_frames": cap.rest_frames,
        "seed": seed,
        "max_yaw_deg": max_yaw_deg,
        "pose_channels": list(POSE_CHANNELS),
        "source": "skimage.data.astronaut() (public domain), piecewise-affine warp of its mediapipe mesh",
        "generator": "engines.create.synthetic_capture",
        "version": VERSION,
    }
    (out / "capture.json").write_text(json.dumps(meta, indent=1))


def load_synthetic_capture(directory: str | Path) -> SyntheticCapture:
    """Read a capture written by :func:`make_synthetic_capture`; FileNotFoundError when incomplete."""
    d = Path(directory)
    meta_path, npz_path = d / "capture.json", d / "capture.npz"
    if not (meta_path.is_file() and npz_path.is_file()):
        raise FileNotFoundError(f"no synthetic capture in {d}")
    meta = json.loads(meta_path.read_text())
    video = d / meta["video"]
    if not video.is_file():
        raise FileNotFoundError(f"{video} is missing")
    with np.load(npz_path) as z:
        channels = [str(c) for c in z["channels"]]
        mat = z["coefficients"]
        pose, landmarks = z["pose"], z["landmarks"]
    return SyntheticCapture(
        video=video,
        fps=float(meta["fps"]),
        size=(int(meta["size"][0]), int(meta["size"][1])),
        coefficients={c: mat[:, i] for i, c in enumerate(channels)},
        pose=pose,
        landmarks=landmarks,
        text=str(meta["text"]),
        sample_rate=int(meta["sample_rate"]),
        rest_frames=int(meta["rest_frames"]),
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-yaw-deg", type=float, default=12.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cap = make_synthetic_capture(args.out, args.seconds, args.size, args.seed, args.max_yaw_deg)
    print(f"{cap.video}: {cap.frames} frames, text: {cap.text!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
