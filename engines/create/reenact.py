"""Drive an avatar with a tracked clip: rig parameters and aligned crops for each tracked frame.

Used by the replica builder (to fit expression deltas and appearance over many
frames) and by ``avatar eval`` (self-reenactment on held-out frames), for any
avatar our builders make (replica or one-shot photo avatar): it needs only
``metadata["source_landmarks_px"]`` (the landmarks of the avatar's neutral, in
its camera's pixels), ``metadata["crop_box_src"]`` and
``metadata["source_frame"]`` (which tracked frame the avatar was built from).

For frame k (see :class:`~engines.create.tracking.Tracking`):

* **head pose**: the rotation from the source frame to frame k,
  ``R_k · R_srcᵀ``, as (pitch, yaw, roll) in the rig's convention;
* **crop box**: the rig rotates about its head pivot but cannot translate or
  scale the head, so the real frame is cropped where the head went: a scale and
  an offset fitted (least squares) so that the rigid landmarks of frame k land
  where the rotated source landmarks project;
* **expression**: bounded least squares (0..1, a small ridge) of the remaining
  landmark displacement on the avatar's own **landmark-delta basis**: each
  landmark is anchored to the few face Gaussians nearest to it on the same side
  of the lips (the inner lips to their exact landmark Gaussians), and a
  channel's landmark delta is the weighted mean of those Gaussians' rig deltas,
  projected to the image through the posed head (first order);
* **gaze**: the iris centres relative to the eye corners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.create.photo import (
    BROW_L,
    BROW_R,
    EYE_L_LOWER,
    EYE_L_UPPER,
    EYE_R_LOWER,
    EYE_R_UPPER,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER,
    FaceGeometry,
    crop_inside,
    crop_photo,
    face_geometry,
)
from engines.create.tracking import RIGID, Tracking, matrix_to_euler
from engines.create.video_io import VideoAvatarError, iter_frames
from engines.splat.avatar import LAYER_HEAD, Avatar
from engines.splat.rig import euler_matrix

logger = logging.getLogger(__name__)

#: Channels fitted from landmarks (the rest stay 0): mouth, jaw, lids, brows.
FIT_CHANNELS: tuple[str, ...] = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "mouthPressLeft", "mouthPressRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeWideLeft", "eyeWideRight", "eyeSquintLeft", "eyeSquintRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
)  # fmt: skip
MOUTH_FIT = tuple(c for c in FIT_CHANNELS if c.startswith(("jaw", "mouth")))

# upper lip = inner upper + the outer contour's upper half; the rest of the outer contour is the lower lip
_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
_OUTER_LOWER = tuple(i for i in LIPS_OUTER if i not in _OUTER_UPPER)
_BROW_MORE = (46, 53, 52, 65, 55, 276, 283, 282, 295, 285)
_CHIN = (152, 148, 176, 149, 377, 400, 378, 18, 200, 199, 175)
_CHEEKS = (205, 425, 50, 280, 187, 411, 216, 436, 212, 432, 202, 422, 57, 287, 43, 273, 106, 335, 182, 406)
#: Landmarks the expression fit looks at.
FIT_LANDMARKS: tuple[int, ...] = tuple(
    dict.fromkeys(
        LIPS_INNER_UPPER[1:-1] + LIPS_INNER_LOWER[1:-1] + LIPS_OUTER + EYE_R_UPPER[1:-1] + EYE_R_LOWER[1:-1]
        + EYE_L_UPPER[1:-1] + EYE_L_LOWER[1:-1] + BROW_L + BROW_R + _BROW_MORE + _CHIN + _CHEEKS
    )
)  # fmt: skip
_LOWER_LIP = set(LIPS_INNER_LOWER[1:-1]) | set(_OUTER_LOWER) | set(_CHIN)
_UPPER_LIP = set(LIPS_INNER_UPPER[1:-1]) | set(_OUTER_UPPER) - {61, 291}
IRIS_A, IRIS_B = 468, 473  # iris centres (refined landmarks)
GAZE_PER_HALF_WIDTH = 0.28  # the rig's eyeGazeX = 1 shifts the iris by 0.28 eye half-widths (procedural_rig)
GAZE_Y_PER_HALF_WIDTH = 0.2
RIDGE = 0.02  # Tikhonov weight towards 0 (pixels² per unit²) on the expression fit
#: Closing/compressing channels explain small lip motions in many ways; a stronger ridge keeps the fit
#: to the opening channels unless the lips really press, roll or close over an open jaw.
RIDGE_CLOSING = 1.0
_CLOSING = ("mouthClose", "mouthPressLeft", "mouthPressRight", "mouthRollLower", "mouthRollUpper",
            "mouthShrugLower", "mouthShrugUpper")  # fmt: skip
ANCHORS = 4


class DriveError(VideoAvatarError):
    """The avatar or the tracking lacks what driving needs."""


@dataclass
class LandmarkBasis:
    """An avatar's landmark-delta basis: how each fitted channel moves each fitted landmark."""

    landmarks: np.ndarray  # [L] int, mediapipe indices
    channels: tuple[str, ...]  # [C'] fitted channel names
    columns: np.ndarray  # [C'] int, their columns in the avatar's params
    anchor_index: np.ndarray  # [L, A] int64 Gaussian indices
    anchor_weight: np.ndarray  # [L, A] float64, rows sum to 1
    deltas: np.ndarray  # [C', L, 3] float64 camera-space landmark delta at channel value 1


@dataclass
class Drive:
    """Rig parameters and real-frame crops that reproduce tracked frames on one avatar."""

    positions: np.ndarray  # [K] int, positions in the tracking
    params: np.ndarray  # [K, C] float32
    boxes: np.ndarray  # [K, 3] float64, (x0, y0, side) crop of each real frame in source pixels
    landmarks_px: np.ndarray  # [K, 478, 2] float32, tracked landmarks in the crop's pixels (avatar size)
    neutral_px: np.ndarray  # [K, 478, 2] float32, where the posed head puts them with no expression
    residual_px: np.ndarray  # [K] float32, RMS landmark residual of the fit (pixels at the avatar's size)


def source_geometry(avatar: Avatar) -> FaceGeometry:
    """The avatar's source landmarks lifted to 3D with its rig features."""
    lm = avatar.metadata.get("source_landmarks_px")
    if lm is None:
        raise DriveError(
            "this avatar has no source landmarks in its metadata (built before video driving existed); "
            "re-create it with this version"
        )
    return face_geometry(np.asarray(lm, dtype=np.float64), avatar.camera)


def _delta_lookup(avatar: Avatar, cols: Sequence[int] | np.ndarray, gaussians: np.ndarray) -> np.ndarray:
    """Rig deltas [len(cols), len(gaussians), 3] of the given channels at the given Gaussians."""
    pos = {int(g): i for i, g in enumerate(gaussians.tolist())}
    out = np.zeros((len(cols), len(gaussians), 3))
    for a, c in enumerate(cols):
        idx, d = avatar.rig.channel_deltas(int(c))
        for k, g in enumerate(idx.tolist()):
            i = pos.get(g)
            if i is not None:
                out[a, i] = d[k]
    return out


def landmark_basis(avatar: Avatar, geo: FaceGeometry | None = None) -> LandmarkBasis:
    """The avatar's landmark-delta basis (see the module docstring)."""
    geo = geo or source_geometry(avatar)
    lms = np.asarray(FIT_LANDMARKS)
    chans = tuple(c for c in FIT_CHANNELS if c in avatar.channels)
    cols = np.array([avatar.channel_index(c) for c in chans])
    cam = avatar.camera
    means = avatar.means.astype(np.float64)
    uv = np.stack(
        [cam.fx * means[:, 0] / means[:, 2] + cam.cx, cam.fy * means[:, 1] / means[:, 2] + cam.cy], 1
    )
    head = np.flatnonzero(avatar.layers == LAYER_HEAD)
    # face-surface Gaussians: on the head layer, near the depth of the face mesh at their pixel
    m = geo.feats.mouth
    loc = m.local(means[head])
    lower_side = loc[:, 1] > 0.5 * (m.up(loc[:, 0]) + m.lo(loc[:, 0]))
    groups = avatar.metadata.get("landmark_gaussians", {})
    exact: dict[int, int] = {}
    for name, idxs in (
        ("inner_lip_upper", LIPS_INNER_UPPER[1:-1]),
        ("inner_lip_lower", LIPS_INNER_LOWER[1:-1]),
    ):
        if name in groups and len(groups[name]) == len(idxs):
            exact.update({int(j): int(g) for j, g in zip(idxs, groups[name], strict=True)})
    a_idx = np.zeros((len(lms), ANCHORS), np.int64)
    a_w = np.zeros((len(lms), ANCHORS))
    tol = 0.04 * geo.face_w
    for r, j in enumerate(lms.tolist()):
        if j in exact:
            a_idx[r] = exact[j]
            a_w[r] = 1.0 / ANCHORS
            continue
        ok = np.abs(means[head, 2] - geo.depth[j]) < tol
        if j in _LOWER_LIP:
            ok &= lower_side
        elif j in _UPPER_LIP:
            ok &= ~lower_side
        cand = head[ok]
        if cand.size < ANCHORS:
            cand = head
        d = np.linalg.norm(uv[cand] - geo.lm[j, :2], axis=1)
        near = np.argsort(d)[:ANCHORS]
        w = 1.0 / (d[near] + 0.5)
        a_idx[r] = cand[near]
        a_w[r] = w / w.sum()
    uniq, inv = np.unique(a_idx.ravel(), return_inverse=True)
    table = _delta_lookup(avatar, cols, uniq)  # [C', U, 3]
    per = table[:, inv.reshape(a_idx.shape)]  # [C', L, A, 3]
    deltas = np.einsum("clak,la->clk", per, a_w)
    return LandmarkBasis(lms, chans, cols, a_idx, a_w, deltas)


def _project(cam_f: tuple[float, float, float, float], p: np.ndarray) -> np.ndarray:
    fx, fy, cx, cy = cam_f
    return np.stack([fx * p[..., 0] / p[..., 2] + cx, fy * p[..., 1] / p[..., 2] + cy], axis=-1)


def _jacobian(cam_f: tuple[float, float, float, float], p: np.ndarray) -> np.ndarray:
    """[L, 2, 3] derivative of the projection at points [L, 3]."""
    fx, fy, _, _ = cam_f
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    zero = np.zeros_like(z)
    return np.stack(
        [np.stack([fx / z, zero, -fx * x / z**2], 1), np.stack([zero, fy / z, -fy * y / z**2], 1)], axis=1
    )


def source_position(avatar: Avatar, tracking: Tracking) -> int:
    """Position in ``tracking`` of the frame the avatar was built from."""
    src = avatar.metadata.get("source_frame") or {}
    if "frame_index" not in src:
        raise DriveError("this avatar does not say which frame of the clip it was built from (source_frame)")
    hit = np.flatnonzero(tracking.frame_index == int(src["frame_index"]))
    if hit.size == 0:
        raise DriveError(f"frame {src['frame_index']} (the avatar's source) was not tracked in this clip")
    return int(hit[0])


def solve_bounded(a: np.ndarray, b: np.ndarray, ridge: float | np.ndarray = RIDGE) -> np.ndarray:
    """argmin ‖a x − b‖² + Σ ridge_c x_c² with 0 ≤ x ≤ 1 (x [C']; ridge scalar or [C'])."""
    from scipy.optimize import lsq_linear

    c = a.shape[1]
    aa = np.concatenate([a, np.diag(np.sqrt(np.broadcast_to(np.asarray(ridge, np.float64), (c,))))])
    bb = np.concatenate([b, np.zeros(c)])
    return np.asarray(lsq_linear(aa, bb, bounds=(0.0, 1.0), method="bvls").x)


def drive(
    avatar: Avatar,
    tracking: Tracking,
    positions: Sequence[int] | np.ndarray,
    basis: LandmarkBasis | None = None,
    expressions: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Drive:
    """Rig parameters and crop boxes that reproduce ``tracking``'s frames at ``positions`` on ``avatar``."""
    positions = np.asarray(positions, dtype=np.int64)
    geo = source_geometry(avatar)
    basis = basis or landmark_basis(avatar, geo)
    src = source_position(avatar, tracking)
    cam = avatar.camera
    cam_f = (float(cam.fx), float(cam.fy), float(cam.cx), float(cam.cy))
    pivot = avatar.rig.head_pivot.astype(np.float64)
    x_src = geo.pts3  # [478, 3]
    rigid = list(RIGID)
    sel = basis.landmarks
    n_ch = len(avatar.channels)
    ip, iy, ir = (avatar.channel_index(c) for c in ("headPitch", "headYaw", "headRoll"))
    gx = avatar.channel_index("eyeGazeX") if "eyeGazeX" in avatar.channels else -1
    gy = avatar.channel_index("eyeGazeY") if "eyeGazeY" in avatar.channels else -1
    r_src = tracking.rotation[src].astype(np.float64)
    k_n = len(positions)
    params = np.zeros((k_n, n_ch), np.float32)
    boxes = np.zeros((k_n, 3))
    lm_px = np.zeros((k_n, 478, 2), np.float32)
    neutral_px = np.zeros((k_n, 478, 2), np.float32)
    resid = np.zeros(k_n, np.float32)
    gaze_src = _gaze(geo.lm[:, :2])
    ridge = np.array([RIDGE_CLOSING if c in _CLOSING else RIDGE for c in basis.channels])
    for n, k in enumerate(positions.tolist()):
        lm = tracking.landmarks[k].astype(np.float64)
        if not np.all(np.isfinite(lm)):
            raise DriveError(f"frame at {tracking.times[k]:.2f} s has no tracked face")
        r_rel = tracking.rotation[k].astype(np.float64) @ r_src.T
        ang = matrix_to_euler(r_rel)
        rot = euler_matrix(ang[:1], ang[1:2], ang[2:])[0].astype(np.float64)
        posed = (x_src - pivot) @ rot.T + pivot
        target = _project(cam_f, posed)  # [478, 2]
        # crop box: scale σ and offset o with σ·lm − o ≈ target on the rigid landmarks
        src_xy = lm[rigid, :2]
        rows = len(rigid)
        a = np.zeros((2 * rows, 3))
        a[:rows, 0], a[:rows, 1] = src_xy[:, 0], -1.0
        a[rows:, 0], a[rows:, 2] = src_xy[:, 1], -1.0
        sol = np.linalg.lstsq(a, np.concatenate([target[rigid, 0], target[rigid, 1]]), rcond=None)[0]
        sigma, ox, oy = float(sol[0]), float(sol[1]), float(sol[2])
        boxes[n] = (ox / sigma, oy / sigma, cam.width / sigma)
        q = lm[:, :2] * sigma - np.array([ox, oy])  # landmarks in the crop's pixels
        lm_px[n] = q
        neutral_px[n] = target
        params[n, ip], params[n, iy], params[n, ir] = ang
        if expressions:
            jac = _jacobian(cam_f, posed[sel])  # [L, 2, 3]
            # landmark deltas rotate with the head, then project: [L·2, C']
            dl = np.einsum("clk,mk->clm", basis.deltas, rot)  # [C', L, 3]
            amat = np.einsum("lij,clj->lic", jac, dl).reshape(-1, len(basis.channels))
            b = (q[sel] - target[sel]).reshape(-1)
            coef = solve_bounded(amat, b, ridge)
            params[n, basis.columns] = coef
            resid[n] = float(np.sqrt(np.mean((amat @ coef - b) ** 2)))
        if gx >= 0 and gy >= 0:
            g = _gaze(q) - gaze_src
            params[n, gx], params[n, gy] = np.clip(g, -1.0, 1.0)
        if progress:
            progress(n + 1, k_n)
    return Drive(positions, params, boxes, lm_px, neutral_px, resid)


def _gaze(lm2: np.ndarray) -> np.ndarray:
    """(gaze x, gaze y) in the rig's units from the iris centres [478, 2] (mean of both eyes)."""
    out = []
    for ids in ((362, 263), (33, 133)):
        c = 0.5 * (lm2[ids[0]] + lm2[ids[1]])
        half = 0.5 * float(np.linalg.norm(lm2[ids[1]] - lm2[ids[0]]))
        iris = (
            lm2[IRIS_A] if np.linalg.norm(lm2[IRIS_A] - c) < np.linalg.norm(lm2[IRIS_B] - c) else lm2[IRIS_B]
        )
        ex = (lm2[ids[1]] - lm2[ids[0]]) / max(2 * half, 1e-6)
        ey = np.array([-ex[1], ex[0]])
        d = (iris - c) / max(half, 1e-6)
        out.append([d @ ex / GAZE_PER_HALF_WIDTH, d @ ey / GAZE_Y_PER_HALF_WIDTH])
    return np.mean(np.asarray(out), axis=0)


def crop_valid(boxes: np.ndarray, width: int, height: int, size: int) -> np.ndarray:
    """[K, size, size] bool: the crop pixels that come from inside the source frame (the rest is
    replicated border, see :func:`engines.create.photo.crop_photo`)."""
    out = np.zeros((len(boxes), size, size), bool)
    for n, (x0, y0, side) in enumerate(np.asarray(boxes, np.float64)):
        out[n] = crop_inside((float(x0), float(y0), float(side)), (height, width), size)
    return out


def crop_frames(
    path: str | Path,
    tracking: Tracking,
    positions: Sequence[int] | np.ndarray,
    boxes: np.ndarray,  # [K, 3] (x0, y0, side) source pixels
    size: int,
) -> np.ndarray:
    """The real frames at ``positions``, each cropped to its box and resampled: uint8 [K, size, size, 3].

    Decodes the clip once, streaming (only the wanted frames are converted)."""
    positions = np.asarray(positions, dtype=np.int64)
    want: dict[int, list[int]] = {}
    for n, k in enumerate(positions.tolist()):
        want.setdefault(int(tracking.frame_index[k]), []).append(n)
    out = np.zeros((len(positions), size, size, 3), np.uint8)
    seen = 0
    for fr in iter_frames(path, indices=set(want)):
        for n in want.get(fr.index, []):
            out[n] = crop_photo(fr.rgb, tuple(boxes[n]), size)
            seen += 1
    if seen < len(positions):
        raise DriveError(f"{path}: only {seen} of {len(positions)} wanted frames were decoded")
    return out
