"""A personal replica from a short video: :func:`create_from_video`.

:func:`create_from_video` returns the avatar; :func:`build_replica` also the
clip's :class:`~engines.create.tracking.Tracking` and the build report (also
in ``metadata["replica"]``). Stages (each reports ``progress(stage, done, total)``):

1. **tracking** (:mod:`engines.create.tracking`): landmarks, head pose and
   quality of every frame (≤ 30 fps), one mediapipe process, streaming decode;
   the clip checks raise errors naming the second. The last 1/11 of the frames
   are held out for ``avatar eval`` and never used below.
2. **rest frame**: among usable build frames, the one with closed lips, a
   relaxed mouth (its width near the median of closed-mouth frames: no smile,
   no press), open eyes, the usual head pose and a sharp picture.
3. **base avatar**: the photo pipeline (:mod:`engines.create.photo`) on the
   rest frame: face surface, hair, inner mouth, eyes, static layer and the
   procedural rig (Gaussian budget as a photo avatar, ~39 k).
4. **expressions**: every usable build frame is driven
   (:mod:`engines.create.reenact`): head pose, crop box, expression
   coefficients by least squares on the landmark-delta basis.
5. **person-specific deltas** (:mod:`engines.create.personalise`): the
   mouth/jaw/lid/brow deltas re-estimated from those frames with the
   procedural rig as the prior; coefficients fitted again.
6. **neck**: static Gaussians under the chin follow the head's rotation with
   a weight fading towards the shoulders (deltas on the pose channels), so the
   head turns without a seam at the jaw line.
7. **appearance**: frames spread over poses and expressions (open mouths
   included: they texture teeth and tongue), a background plate (per-pixel
   median of those frames with the person masked out) for the static layer,
   then every moving Gaussian's colour by least squares over the frames
   (:mod:`engines.create.color_fit`).
8. **speaking style** (:mod:`engines.create.speaking_style`) into the metadata.

Memory: tracking holds landmark arrays (10 MB a minute); appearance holds
``appearance_frames`` crops at the avatar's size (0.8 MB each at 512²) twice
(head-aligned and fixed), plus one decoded source frame at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.create.color_fit import fit_colors
from engines.create.personalise import refit_projected_deltas, spread, with_extra_deltas
from engines.create.photo import (
    CHEEK_L,
    CHEEK_R,
    CHIN,
    EYE_L_LOWER,
    EYE_L_UPPER,
    EYE_R_LOWER,
    EYE_R_UPPER,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    FaceGeometry,
    PhotoOptions,
    create_from_image,
    refine_colors,
)
from engines.create.reenact import crop_frames, crop_valid, drive, landmark_basis, source_geometry
from engines.create.speaking_style import measure_style, speech_activity_from_audio
from engines.create.tracking import Tracking, TrackOptions, track_video, tracking_summary
from engines.create.video_io import VideoAvatarError, iter_frames
from engines.splat.avatar import LAYER_STATIC, Avatar, sort_by_layer

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

STAGES = ("tracking", "rest frame", "base avatar", "expressions", "person-specific deltas", "neck",
          "appearance", "speaking style")  # fmt: skip


@dataclass
class ReplicaOptions:
    size: int = 512
    track: TrackOptions = field(default_factory=TrackOptions)
    photo_refine_iters: int = 6
    appearance_frames: int = 32
    color_iters: int = 8
    personalise_rounds: int = 2
    color_prior: float = 0.02  # pull towards the rest frame's colours (× the median data weight)
    rest_weight: float = 1.0  # the rest frame's pixel weight in the colour fit (others 1)
    neck: bool = True


@dataclass
class ReplicaResult:
    avatar: Avatar
    tracking: Tracking
    report: dict[str, Any]


# ------------------------------------------------------------------ rest frame


def _ratio(lm: np.ndarray, a: tuple[int, ...], b: tuple[int, ...], left: int, right: int) -> np.ndarray:
    """[F] mean gap between the curves a and b (inner points) over the opening's width."""
    gap = np.linalg.norm(lm[:, list(b[1:-1]), :2] - lm[:, list(a[1:-1]), :2], axis=2).mean(axis=1)
    width = np.linalg.norm(lm[:, right, :2] - lm[:, left, :2], axis=1)
    return np.asarray(gap / np.maximum(width, 1e-6))


def face_measures(lm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame mouth gap, mouth width and eye openness ratios from landmarks [F, 478, 3]."""
    face_w = np.linalg.norm(lm[:, CHEEK_L, :2] - lm[:, CHEEK_R, :2], axis=1)
    return {
        "mouth_gap": _ratio(lm, LIPS_INNER_UPPER, LIPS_INNER_LOWER, 78, 308),
        "mouth_width": np.linalg.norm(lm[:, 308, :2] - lm[:, 78, :2], axis=1) / np.maximum(face_w, 1e-6),
        "eyes": 0.5
        * (_ratio(lm, EYE_R_UPPER, EYE_R_LOWER, 33, 133) + _ratio(lm, EYE_L_UPPER, EYE_L_LOWER, 362, 263)),
    }


def choose_rest_frame(tr: Tracking, candidates: np.ndarray) -> tuple[int, dict[str, float]]:
    """Position of the closed-mouth, relaxed, eyes-open, usual-pose, sharp frame (and its scores)."""
    lm = tr.landmarks[candidates]
    m = face_measures(lm)
    pose_deg = np.degrees(np.linalg.norm(tr.pose[candidates], axis=1))
    eye_med = float(np.median(m["eyes"]))
    # hard requirements first (lips closed, eyes open, usual pose), relaxed step by step if no frame has all;
    # open eyes matter more than fully closed lips (the photo pipeline closes parted lips by its rest
    # expression, but eyes shut in the rest face stay shut)
    closed = m["mouth_gap"] < 0.04
    ok = closed
    for gap_max, eyes_min, pose_max in (
        (0.04, 0.8, 8.0), (0.04, 0.7, 12.0), (0.1, 0.7, 12.0), (0.04, 0.5, 20.0), (0.2, 0.6, 20.0),
        (0.1, 0.0, 180.0), (np.inf, 0.0, 180.0),
    ):  # fmt: skip
        ok = (m["mouth_gap"] < gap_max) & (m["eyes"] >= eyes_min * eye_med) & (pose_deg <= pose_max)
        if ok.any():
            break
    closed = ok
    relaxed_w = float(np.median(m["mouth_width"][closed]))
    sharp_rank = np.argsort(np.argsort(tr.sharpness[candidates])) / max(len(candidates) - 1, 1)
    score = (
        pose_deg / 4.0
        + np.abs(m["mouth_width"] - relaxed_w) / 0.02
        + np.maximum(eye_med - m["eyes"], 0.0) / 0.02
        + m["mouth_gap"] / 0.02
        + (1.0 - sharp_rank) * 0.8
    )
    score[~closed] += 1000.0
    best = int(np.argmin(score))
    info = {
        "mouth_gap": round(float(m["mouth_gap"][best]), 4),
        "mouth_width_vs_relaxed": round(float(m["mouth_width"][best] / relaxed_w), 4),
        "eyes_vs_median": round(float(m["eyes"][best] / max(eye_med, 1e-6)), 4),
        "pose_deg": round(float(pose_deg[best]), 2),
    }
    return int(candidates[best]), info


# ------------------------------------------------------------------ neck


NECK_FORWARD = 0.1  # face widths: more than a ±0.1 rad head turn moves the neck in depth


def neck_deltas(avatar: Avatar, geo: FaceGeometry) -> Avatar:
    """Static Gaussians under the chin follow head pitch/yaw/roll (linearised rotation about the head
    pivot), with a weight 1 at the jaw line fading to 0 at the shoulders."""
    cam = avatar.camera
    st = np.flatnonzero(avatar.layers == LAYER_STATIC)
    p = avatar.means[st].astype(np.float64)
    uv = np.stack([cam.fx * p[:, 0] / p[:, 2] + cam.cx, cam.fy * p[:, 1] / p[:, 2] + cam.cy], 1)
    chin = geo.lm[CHIN, :2]
    face_px = float(np.linalg.norm(geo.lm[CHEEK_L, :2] - geo.lm[CHEEK_R, :2]))
    cx = 0.5 * (geo.lm[CHEEK_L, 0] + geo.lm[CHEEK_R, 0])
    dy = (uv[:, 1] - chin[1]) / face_px  # below the chin in face widths
    dx = np.abs(uv[:, 0] - cx) / face_px
    # above the chin (behind the head) everything follows; below, fade over 0.9 face widths;
    # sideways, fade beyond the neck's half width (0.38 face widths) over 0.25
    w_v = np.clip(1.0 - np.maximum(dy, 0.0) / 0.9, 0.0, 1.0)
    w_h = np.clip(1.0 - np.maximum(dx - 0.38, 0.0) / 0.25, 0.0, 1.0)
    # smooth ramps
    w = (w_v * w_v * (3 - 2 * w_v)) * (w_h * w_h * (3 - 2 * w_h))
    keep = w > 1e-3
    idx, w, p = st[keep], w[keep], p[keep]
    # moved Gaussians leave the renderer's static plate, which must lie behind everything that moves: bring
    # the neck forward along the view rays (the same pixels, scales shrunk alike, so the rest looks the same)
    f = (p[:, 2] - NECK_FORWARD * geo.face_w) / p[:, 2]
    p = p * f[:, None]
    avatar.means[idx] = p.astype(np.float32)
    avatar.scales[idx] = (avatar.scales[idx] * f[:, None]).astype(np.float32)
    pivot = avatar.rig.head_pivot.astype(np.float64)
    r = p - pivot
    # d/dθ at 0 of R = Rz(roll)·Ry(−yaw)·Rx(pitch): pitch → x̂ × r, yaw → −ŷ × r, roll → ẑ × r
    extra = {}
    for name, axis in (
        ("headPitch", (1.0, 0.0, 0.0)),
        ("headYaw", (0.0, -1.0, 0.0)),
        ("headRoll", (0.0, 0.0, 1.0)),
    ):
        if name in avatar.channels:
            extra[avatar.channel_index(name)] = (idx, w[:, None] * np.cross(np.asarray(axis), r))
    return with_extra_deltas(avatar, extra)


# ------------------------------------------------------------------ appearance


def spread_frames(features: np.ndarray, k: int, first: int) -> np.ndarray:
    """Farthest-point sampling: ``k`` row indices of ``features`` [F, D] starting from ``first``."""
    chosen = [first]
    d = np.linalg.norm(features - features[first], axis=1)
    for _ in range(min(k, len(features)) - 1):
        nxt = int(np.argmax(d))
        if d[nxt] <= 0:
            break
        chosen.append(nxt)
        d = np.minimum(d, np.linalg.norm(features - features[nxt], axis=1))
    return np.asarray(chosen)


def background_plate(
    avatar: Avatar, fixed: np.ndarray, params: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(plate [H, W, 3] float 0..1, known [H, W] bool): per-pixel median of the fixed-box crops where
    the posed person (every layer but the static one, dilated) does not cover it and the crop lies
    inside the source frame (``valid`` [K, H, W])."""
    from scipy.ndimage import binary_dilation

    from engines.splat.measure import head_silhouette

    masks = head_silhouette(avatar, params.astype(np.float32), erode=0)
    h, _w = masks.shape[1:]
    free = np.stack([~binary_dilation(m, iterations=max(4, h // 40)) for m in masks]) & valid  # [K, H, W]
    # the torso under the head (static layer) is part of the plate; only the moving head is masked
    stack = np.where(free[..., None], fixed.astype(np.float32), np.nan)
    known = free.sum(axis=0) >= max(2, len(fixed) // 6)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            plate = np.nanmedian(stack, axis=0) / 255.0
    plate = np.where(known[..., None], plate, 0.0)
    return plate, known


# ------------------------------------------------------------------ the pipeline


def create_from_video(
    path: str | Path, opts: ReplicaOptions | None = None, progress: Progress | None = None
) -> Avatar:
    """A personal replica from the clip at ``path`` (see the module docstring); ``progress(stage, done, total)``."""
    return build_replica(path, opts, progress).avatar


def build_replica(
    path: str | Path,
    opts: ReplicaOptions | None = None,
    progress: Progress | None = None,
    tracking: Tracking | None = None,
) -> ReplicaResult:
    """The replica, the clip's tracking and the build report (see the module docstring).

    ``tracking`` reuses a tracking of the same clip instead of tracking it again."""
    opts = opts or ReplicaOptions()
    say = progress or (lambda stage, done, total: None)
    path = Path(path)
    seconds: dict[str, float] = {}
    t0 = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal t0
        seconds[stage] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()

    tr = tracking or track_video(path, opts.track, progress=say)
    lap("tracking")
    build, held = tr.split()
    cand = build[tr.usable[build]]
    if cand.size < 10:
        raise VideoAvatarError(
            f"{path}: only {cand.size} usable frames before the held-out part; film a longer or steadier clip"
        )

    say("rest frame", 0, 1)
    rest, rest_info = choose_rest_frame(tr, cand)
    say("rest frame", 1, 1)
    lap("rest frame")

    steps = [0]

    def photo_step(msg: str) -> None:
        steps[0] += 1
        say("base avatar", steps[0], 22)

    frame = next(iter_frames(path, indices={int(tr.frame_index[rest])})).rgb
    avatar = create_from_image(
        frame,
        PhotoOptions(size=opts.size, refine_iters=opts.photo_refine_iters),
        provenance={"source": path.name, "licence": "as the source clip"},
        progress=photo_step,
        landmarks=tr.landmarks[rest],
    )
    del frame
    avatar.metadata["source_frame"] = {
        "frame_index": int(tr.frame_index[rest]),
        "time_s": round(float(tr.times[rest]), 3),
        "position": int(rest),
    }
    geo = source_geometry(avatar)
    lap("base avatar")

    # expressions on every usable build frame
    def fit_progress(stage: str) -> Callable[[int, int], None]:
        return lambda done, total: say(stage, done, total)

    basis = landmark_basis(avatar, geo)
    fitted = drive(avatar, tr, cand, basis, progress=fit_progress("expressions"))
    lap("expressions")
    resid0 = float(np.median(fitted.residual_px))

    for rnd in range(opts.personalise_rounds):
        p0, p = refit_projected_deltas(basis, geo, fitted, fitted.neutral_px)
        avatar = spread(avatar, geo, basis, p - p0)
        basis = landmark_basis(avatar, geo)
        fitted = drive(avatar, tr, cand, basis)
        say("person-specific deltas", rnd + 1, opts.personalise_rounds)
    lap("person-specific deltas")
    resid1 = float(np.median(fitted.residual_px))

    if opts.neck:
        avatar = neck_deltas(avatar, geo)
    say("neck", 1, 1)
    lap("neck")

    # appearance: frames spread over pose and expression
    cols = [avatar.channel_index(c) for c in ("jawOpen", "mouthFunnel", "mouthPucker", "mouthSmileLeft",
                                              "mouthSmileRight", "eyeBlinkLeft", "eyeBlinkRight")]  # fmt: skip
    pose_cols = [avatar.channel_index(c) for c in ("headPitch", "headYaw", "headRoll")]
    feats = np.concatenate(
        [
            fitted.params[:, cols] * np.array([3.0, 1, 1, 1, 1, 0.5, 0.5]),
            np.degrees(fitted.params[:, pose_cols]) / 4.0,
        ],
        axis=1,
    )
    first = int(np.flatnonzero(cand == rest)[0])
    pick = spread_frames(feats, opts.appearance_frames, first)
    positions = cand[pick]
    say("appearance", 0, opts.color_iters + 3)
    crops = crop_frames(path, tr, positions, fitted.boxes[pick], opts.size)
    say("appearance", 1, opts.color_iters + 3)
    valid = crop_valid(fitted.boxes[pick], tr.info.width, tr.info.height, opts.size)
    box_src = np.asarray(avatar.metadata["crop_box_src"], np.float64)
    fixed_boxes = np.tile(box_src, (len(positions), 1))
    fixed = crop_frames(path, tr, positions, fixed_boxes, opts.size)
    fixed_valid = crop_valid(fixed_boxes, tr.info.width, tr.info.height, opts.size)
    plate, known = background_plate(avatar, fixed, fitted.params[pick], fixed_valid)
    del fixed
    st = avatar.layers == LAYER_STATIC
    n_static = int(st.sum())
    if known.mean() > 0.02:
        head_cover = _front_alpha(avatar) > 0.5
        visible = st & _at_centres(avatar, known & ~head_cover)
        refine_colors(avatar, plate, visible, known & ~head_cover, 4, lambda msg: None, rate=0.3)
    say("appearance", 2, opts.color_iters + 3)
    colors, fit_stats = fit_colors(
        avatar,
        fitted.params[pick],
        crops,
        weights=valid.astype(np.float32) * _frame_weights(positions, rest, opts.rest_weight)[:, None, None],
        prior=opts.color_prior,
        iters=opts.color_iters,
        progress=lambda i, n: say("appearance", 2 + i, n + 3),
    )
    avatar.colors[:] = colors
    say("appearance", opts.color_iters + 3, opts.color_iters + 3)
    lap("appearance")
    del crops

    # speaking style over every build frame with a face (consecutive frames: spectra need even sampling)
    found = build[np.isfinite(tr.landmarks[build, 0, 0])]
    say("speaking style", 0, 2)
    all_fit = drive(avatar, tr, found, basis)
    speaking = speech_activity_from_audio(path, tr.times[found]) if tr.info.has_audio else None
    style = measure_style(
        avatar.channels, all_fit.params, tr.times[found], speaking, _lip_openings(avatar, tr.landmarks[found])
    )
    say("speaking style", 2, 2)
    lap("speaking style")

    meta = avatar.metadata
    meta["creator"] = "engines.create.replica"
    meta["speaking_style"] = style
    meta["replica"] = {
        "version": 1,
        "clip": {
            "name": path.name,
            "duration_s": round(tr.info.duration_s, 2),
            "fps": round(tr.info.fps, 3),
            "size": [tr.info.width, tr.info.height],
        },
        "tracking": tracking_summary(tr),
        "rest_frame": rest_info,
        "held_out": {
            "first_position": int(held[0]),
            "frames": len(held),
            "from_s": round(float(tr.times[held[0]]), 3),
        },
        "expression_frames": len(cand),
        "appearance_frames": len(positions),
        "landmark_residual_px": {"procedural": round(resid0, 3), "personal": round(resid1, 3)},
        "appearance_rms": {k: round(v, 5) for k, v in fit_stats.items()},
        "background_known": round(float(known.mean()), 3),
        "static_gaussians": n_static,
        "seconds": seconds,
    }
    meta["creation_seconds"] = round(sum(seconds.values()), 2)
    avatar = sort_by_layer(avatar)
    return ReplicaResult(avatar, tr, meta["replica"])


def _opening_ratio(lm: np.ndarray) -> np.ndarray:
    """[F] largest inner-lip gap over the mouth width, from landmarks [F, 478, 2+]."""
    up, lo = list(LIPS_INNER_UPPER[1:-1]), list(LIPS_INNER_LOWER[1:-1])
    gap = np.linalg.norm(lm[:, lo, :2] - lm[:, up, :2], axis=2).max(axis=1)
    return np.asarray(gap / np.maximum(np.linalg.norm(lm[:, 308, :2] - lm[:, 78, :2], axis=1), 1e-6))


def _lip_openings(avatar: Avatar, lm: np.ndarray) -> tuple[np.ndarray, float]:
    """(the clip's lip openings [F], the avatar's opening per unit of jawOpen) for the jawOpen gain."""
    from engines.splat.measure import lip_aperture_px

    corners = np.asarray(avatar.metadata["mouth_corners_px"], np.float64)
    width = float(np.linalg.norm(corners[1] - corners[0]))
    base = float(lip_aperture_px(avatar, avatar.rest(1))[0])
    half = avatar.rest(1)
    half[0, avatar.channel_index("jawOpen")] += 0.5
    per_unit = max(float(lip_aperture_px(avatar, half)[0]) - base, 0.0) / 0.5 / max(width, 1e-6)
    return _opening_ratio(lm), per_unit


def _frame_weights(positions: np.ndarray, rest: int, rest_weight: float) -> np.ndarray:
    """[K] float32 pixel weight of each appearance frame (the rest frame's may count more)."""
    return np.where(np.asarray(positions) == rest, rest_weight, 1.0).astype(np.float32)


def _front_alpha(avatar: Avatar) -> np.ndarray:
    """[H, W] alpha of the moving layers at the neutral."""
    from engines.splat.measure import without_static
    from engines.splat.render import render

    _, alpha = render(without_static(avatar), avatar.neutral(1), return_alpha=True)
    return np.asarray(alpha[0])


def _at_centres(avatar: Avatar, mask: np.ndarray) -> np.ndarray:
    """[N] bool: the Gaussian's projected centre falls on a pixel where ``mask`` is set."""
    cam = avatar.camera
    m = avatar.means.astype(np.float64)
    u = np.clip((cam.fx * m[:, 0] / m[:, 2] + cam.cx).astype(int), 0, cam.width - 1)
    v = np.clip((cam.fy * m[:, 1] / m[:, 2] + cam.cy).astype(int), 0, cam.height - 1)
    return np.asarray(mask[v, u])
