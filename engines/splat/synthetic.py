"""A small procedural head-and-shoulders avatar carrying the full rig.

For tests and renderer development: an ellipsoid head with lips, a mouth
opening with teeth/tongue/cavity behind it, eyes, brows, a torso and a
background plane, rigged by the same procedural rig as photo avatars
(:mod:`engines.create.procedural_rig`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.create.layers import (
    FLAG_DEFORM,
    SIGMA_PER_STEP,
    Part,
    eyeball,
    face_metadata,
    inner_mouth,
    to_avatar,
)
from engines.create.procedural_rig import FaceFeatures, Opening
from engines.splat.avatar import LAYER_HEAD, LAYER_STATIC, Avatar, sort_by_layer
from engines.splat.types import Camera

HEAD_CENTRE = np.array([0.0, -0.02, 1.0])
HEAD_RADII = np.array([0.075, 0.1, 0.085])
SKIN = np.array([0.86, 0.66, 0.55])
LIP = np.array([0.72, 0.33, 0.34])
BROW = np.array([0.25, 0.17, 0.12])


def _surface(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Front ellipsoid surface points [K, 3] and outward normals at image-plane offsets (x, y)."""
    rx, ry, rz = HEAD_RADII
    u, v = x / rx, (y - HEAD_CENTRE[1]) / ry
    s = np.sqrt(np.clip(1.0 - u * u - v * v, 1e-4, None))
    z = HEAD_CENTRE[2] - rz * s
    pts = np.stack([x, y, z], axis=1)
    normals = np.stack([u / rx, v / ry, -s / rz], axis=1)
    return pts, normals / np.linalg.norm(normals, axis=1, keepdims=True)


def _opening(cx: float, cy: float, half: float, gap: float, k: int = 9) -> Opening:
    xs = cx + half * np.linspace(-0.85, 0.85, k)
    bow = gap * (1.0 - ((xs - cx) / half) ** 2)
    up, _ = _surface(xs, cy - bow * half)
    lo, _ = _surface(xs, cy + bow * half)
    corners, _ = _surface(np.array([cx - half, cx + half]), np.array([cy, cy]))
    return Opening.from_points(corners[0], corners[1], up, lo)


def make_test_avatar(n_gaussians: int = 4000, seed: int = 0) -> Avatar:
    """A procedural avatar of roughly ``n_gaussians`` Gaussians (deterministic for a given ``seed``)."""
    if n_gaussians < 500:
        raise ValueError(f"n_gaussians must be ≥ 500, got {n_gaussians}")
    rng = np.random.default_rng(seed)
    camera = Camera(fx=900.0, fy=900.0, cx=256.0, cy=256.0, width=512, height=512)
    rx, ry, _ = HEAD_RADII
    # spacing so that the head (≈45 % of the budget) covers the ellipse
    head_area = np.pi * rx * ry
    step = float(np.sqrt(head_area / (0.45 * n_gaussians)))
    part = Part()

    mouth = _opening(0.0, HEAD_CENTRE[1] + 0.052, 0.024, 0.12)
    eye_r = _opening(-0.03, HEAD_CENTRE[1] - 0.02, 0.013, 0.4)  # subject's right = image left
    eye_l = _opening(0.03, HEAD_CENTRE[1] - 0.02, 0.013, 0.4)

    # head surface, with holes for the mouth and eye openings
    xs = np.arange(-rx, rx + 1e-9, step)
    ys = np.arange(HEAD_CENTRE[1] - ry, HEAD_CENTRE[1] + ry + 1e-9, step)
    gx, gy = (g.ravel() for g in np.meshgrid(xs, ys))
    gx = gx + rng.uniform(-0.05, 0.05, gx.shape) * step
    inside = (gx / rx) ** 2 + ((gy - HEAD_CENTRE[1]) / ry) ** 2 < 0.97
    gx, gy = gx[inside], gy[inside]
    pts, nrm = _surface(gx, gy)
    keep = np.ones(len(pts), bool)
    colors = np.tile(SKIN, (len(pts), 1))
    for op, is_mouth in ((mouth, True), (eye_l, False), (eye_r, False)):
        loc = op.local(pts)
        inner = (np.abs(loc[:, 0]) < 1.0) & (loc[:, 1] > op.up(loc[:, 0])) & (loc[:, 1] < op.lo(loc[:, 0]))
        keep &= ~inner
        if is_mouth:
            lip = (np.abs(loc[:, 0]) < 1.05) & (np.abs(loc[:, 1]) < 0.45 * (1.0 - 0.5 * loc[:, 0] ** 2))
            colors[lip] = LIP
    brows = []
    for cx in (0.03, -0.03):
        bx = cx + np.sign(cx) * np.linspace(-0.012, 0.014, 6)
        by = HEAD_CENTRE[1] - 0.043 - 0.004 * np.sin(np.linspace(0, np.pi, 6))
        brow, _ = _surface(bx, by)
        brows.append(brow)
        d = np.min(np.linalg.norm(pts[:, None, :2] - brow[None, :, :2], axis=2), axis=1)
        colors[d < 0.004] = BROW
    part.add(pts[keep], -nrm[keep], SIGMA_PER_STEP * step, colors[keep], LAYER_HEAD, FLAG_DEFORM)

    # explicit inner-lip Gaussians (tools measure the aperture on these)
    n0 = sum(len(m) for m in part.means)
    lip_groups: dict[str, np.ndarray] = {}
    for name, curve, sgn in (("inner_lip_upper", mouth.upper, -1.0), ("inner_lip_lower", mouth.lower, 1.0)):
        c = curve[1:-1]
        local = np.stack([c[:, 0], c[:, 1] + sgn * 0.01, np.zeros(len(c))], axis=1)
        world = mouth.centre + mouth.half_width * (local @ np.stack([mouth.ex, mouth.ey, mouth.ez]))
        world, wn = _surface(world[:, 0], world[:, 1])
        part.add(world, -wn, 0.5 * step, LIP, LAYER_HEAD, FLAG_DEFORM)
        lip_groups[name] = np.arange(n0, n0 + len(c))
        n0 += len(c)

    # inner mouth and eyes
    mdepth = float(np.max(mouth.local(np.concatenate([mouth.centre[None] + 0 * mouth.ex]))[:, 2])) + 0.45
    inner_mouth(part, mouth, mdepth, step / mouth.half_width)
    for eye in (eye_l, eye_r):
        eyeball(part, eye, 0.35, step / eye.half_width * 0.8)

    # torso (static) and background (static)
    tstep = step * 1.6
    tx, ty = np.meshgrid(np.arange(-0.2, 0.2 + 1e-9, tstep), np.arange(0.06, 0.3, tstep))
    tx, ty = tx.ravel(), ty.ravel()
    torso = ((tx / 0.2) ** 2 + ((ty - 0.3) / 0.22) ** 2 < 1.0) | ((np.abs(tx) < 0.03) & (ty < 0.12))
    tpts = np.stack([tx[torso], ty[torso], np.full(torso.sum(), 1.08)], axis=1)
    part.add(tpts, np.array([0, 0, -1.0]), 0.7 * tstep, np.array([0.2, 0.3, 0.55]), LAYER_STATIC)
    half = 256.0 / 900.0 * 2.0
    remaining = max(n_gaussians - sum(len(m) for m in part.means), 200)
    bstep = 2.0 * half / np.sqrt(remaining)
    bx, by = np.meshgrid(np.arange(-half, half + 1e-9, bstep), np.arange(-half, half + 1e-9, bstep))
    bx, by = bx.ravel(), by.ravel()
    bcol = np.stack([0.35 + 0.2 * (by / half), 0.45 + 0.05 * (bx / half), 0.6 - 0.1 * (by / half)], axis=1)
    part.add(
        np.stack([bx, by, np.full(bx.size, 2.0)], axis=1),
        np.array([0, 0, -1.0]),
        0.75 * bstep,
        bcol,
        LAYER_STATIC,
    )

    feats = FaceFeatures(
        mouth=mouth,
        eye_left=eye_l,
        eye_right=eye_r,
        brow_left=brows[0],
        brow_right=brows[1],
        nose_tip=_surface(np.array([0.0]), np.array([HEAD_CENTRE[1] + 0.02]))[0][0],
        head_pivot=np.array([0.0, HEAD_CENTRE[1] + 0.11, HEAD_CENTRE[2] + 0.02]),
        jaw_pivot=mouth.centre - 1.0 * mouth.half_width * mouth.ey + 3.2 * mouth.half_width * mouth.ez,
    )
    means = np.concatenate(part.means)
    meta = face_metadata(feats, camera, means, lip_groups)
    meta["rest_expression"] = {"mouthPressLeft": 1.0, "mouthPressRight": 1.0}
    meta["provenance"] = {
        "source": "engines.splat.synthetic.make_test_avatar",
        "seed": seed,
        "licence": "Apache-2.0",
    }
    return sort_by_layer(to_avatar(part, feats, camera, np.array([0.35, 0.45, 0.6]), meta))


def write_synthetic_avatar(path: Path) -> tuple[float, float, float, float]:
    """A small procedural avatar file for fast tests; returns its mouth box at the reference size."""
    from engines.splat.avatar import save_avatar

    avatar = make_test_avatar()
    save_avatar(avatar, path)
    x0, y0, x1, y1 = avatar.metadata["mouth_box"]
    return (
        float(x0) / avatar.camera.width,
        float(y0) / avatar.camera.height,
        float(x1) / avatar.camera.width,
        float(y1) / avatar.camera.height,
    )
