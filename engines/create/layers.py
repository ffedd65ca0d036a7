"""Building blocks shared by the photo pipeline and the synthetic test avatar:
flat (disc) Gaussians, the inner-mouth layer and the eyeball layer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.create.procedural_rig import FaceFeatures, Opening, build_rig
from engines.splat.avatar import DEFAULT_CHANNELS, LAYER_EYES, LAYER_JAW, LAYER_MOUTH, Avatar
from engines.splat.types import Camera

ColorFn = Callable[[np.ndarray], np.ndarray]  # [K, 3] camera-space points → [K, 3] colours, NaN where unknown

TEETH = np.array([0.86, 0.83, 0.76])
TEETH_LOWER = np.array([0.78, 0.75, 0.68])
TONGUE = np.array([0.62, 0.28, 0.30])
CAVITY = np.array([0.24, 0.08, 0.09])
#: The inner-mouth cavity reaches this far below the mouth's centre line (mouth half widths): as far as
#: the lower lip goes with the jaw open (the tongue and lower teeth, on the jaw, cover what lies below),
#: above the chin (~1.85), so a head tipped back never shows the cavity under the chin.
CAVITY_BOTTOM = 1.5
#: Gaussian σ per grid spacing: at 0.75 a single grid layer is opaque (α ≥ 0.99) between its centres.
SIGMA_PER_STEP = 0.75


@dataclass
class Part:
    """A batch of Gaussians under construction."""

    means: list[np.ndarray] = field(default_factory=list)
    normals: list[np.ndarray] = field(default_factory=list)
    sigma: list[np.ndarray] = field(default_factory=list)
    colors: list[np.ndarray] = field(default_factory=list)
    layers: list[np.ndarray] = field(default_factory=list)
    flags: list[np.ndarray] = field(default_factory=list)  # bit 1: deformable, bit 2: tongue
    stretch: list[np.ndarray] = field(default_factory=list)  # σ along ``axes`` / σ (1: a round disc)
    axes: list[np.ndarray] = field(default_factory=list)  # [K, 3] the stretched in-plane axis (0: any)

    def add(
        self,
        means: np.ndarray,
        normals: np.ndarray,
        sigma: np.ndarray | float,
        colors: np.ndarray,
        layer: int,
        flag: int = 0,
        stretch: np.ndarray | float = 1.0,
        axes: np.ndarray | None = None,
    ) -> None:
        """``k`` discs; with ``axes`` [K, 3] a disc is ``stretch`` times longer along that direction
        (projected into its plane) than across it."""
        k = len(means)
        self.means.append(np.asarray(means, np.float64).reshape(k, 3))
        self.normals.append(np.broadcast_to(np.asarray(normals, np.float64), (k, 3)).copy())
        self.sigma.append(np.broadcast_to(np.asarray(sigma, np.float64), (k,)).copy())
        self.colors.append(np.broadcast_to(np.asarray(colors, np.float64), (k, 3)).copy())
        self.layers.append(np.full(k, layer, np.int8))
        self.flags.append(np.full(k, flag, np.int8))
        self.stretch.append(np.broadcast_to(np.asarray(stretch, np.float64), (k,)).copy())
        self.axes.append(np.zeros((k, 3)) if axes is None else np.asarray(axes, np.float64).reshape(k, 3))

    def cat(self) -> dict[str, np.ndarray]:
        return {
            "means": np.concatenate(self.means),
            "normals": np.concatenate(self.normals),
            "sigma": np.concatenate(self.sigma),
            "colors": np.concatenate(self.colors),
            "layers": np.concatenate(self.layers),
            "flags": np.concatenate(self.flags),
            "stretch": np.concatenate(self.stretch),
            "axes": np.concatenate(self.axes),
        }


FLAG_DEFORM = 1
FLAG_TONGUE = 2


def disc_quats(normals: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    """Unit quaternions (w, x, y, z) [N, 4] rotating the local z axis onto ``normals`` [N, 3] and, where
    ``axes`` [N, 3] has a direction in the disc's plane, the local x axis onto it."""
    from engines.splat.rig import matrix_to_quat

    n = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(np.broadcast_to(z, n.shape), n)
    w = 1.0 + n[:, 2]
    q = np.concatenate([w[:, None], axis], axis=1)
    flip = w < 1e-6  # normal = -z: rotate 180° about x
    q[flip] = [0.0, 1.0, 0.0, 0.0]
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if axes is not None:
        u = axes - np.einsum("ij,ij->i", axes, n)[:, None] * n  # in the disc's plane
        length = np.linalg.norm(u, axis=1)
        framed = length > 1e-9
        if framed.any():
            u = u[framed] / length[framed, None]
            nn = n[framed]
            rot = np.stack([u, np.cross(nn, u), nn], axis=2)  # columns: local x, y, z
            q[framed] = matrix_to_quat(rot)
    return q.astype(np.float32)


def disc_scales(sigma: np.ndarray, thickness: float = 0.25, stretch: np.ndarray | float = 1.0) -> np.ndarray:
    """Flat Gaussians: [N, 3] with ``stretch``·σ along the local x axis, σ along y and ``thickness``·σ
    along the normal."""
    return np.stack([np.asarray(stretch) * sigma, sigma, thickness * sigma], axis=1).astype(np.float32)


def _grid(x0: float, x1: float, y0: float, y1: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    xs = np.arange(x0, x1 + 1e-9, step)
    ys = np.arange(y0, y1 + 1e-9, step)
    gx, gy = np.meshgrid(xs, ys)
    return gx.ravel(), gy.ravel()


def inner_mouth(
    part: Part, mouth: Opening, depth: float, step: float, color_fn: ColorFn | None = None
) -> None:
    """Cavity, upper teeth (head-rigid), lower teeth and tongue (jaw) behind the lips.

    ``depth`` (local units, along ez) places the teeth plane behind every lip
    point; ``step`` is the Gaussian spacing in local units. Where ``color_fn``
    knows a colour (the photo, inside the neutral opening) it wins, so the
    neutral pose reproduces the picture; elsewhere procedural colours.
    """
    a = mouth.half_width
    sigma = SIGMA_PER_STEP * step * a
    normal = -mouth.ez

    def place(mx: np.ndarray, my: np.ndarray, mz: float) -> np.ndarray:
        return mouth.centre + a * (mx[:, None] * mouth.ex + my[:, None] * mouth.ey + mz * mouth.ez)

    # teeth plane: upper rows above the neutral midline, lower rows below it
    mx, my = _grid(-0.95, 0.95, -0.75, 0.75, step)
    mid = 0.5 * (mouth.up(mx) + mouth.lo(mx))
    rel = my - mid
    pts = place(mx, my, depth)
    upper = rel < 0
    teeth_w = np.abs(mx) < 0.82
    col = np.where(
        upper[:, None],
        np.where((teeth_w & (rel > -0.32))[:, None], TEETH, CAVITY),
        np.where((teeth_w & (rel < 0.24))[:, None], TEETH_LOWER, CAVITY),
    )
    known = np.zeros(len(pts), dtype=bool)
    if color_fn is not None:
        photo = color_fn(pts)
        known = np.all(np.isfinite(photo), axis=1)
        col = np.where(known[:, None], photo, col)
    # the lower plane is only the lower teeth (and what the photo shows): the tongue shows behind it
    lower = ~upper & (known | (teeth_w & (rel < 0.24)))
    part.add(pts[upper], normal, sigma, col[upper], LAYER_MOUTH)
    part.add(pts[lower], normal, sigma, col[lower], LAYER_JAW)
    # tongue: behind the lower teeth, moves with the jaw
    tx, ty = _grid(-0.62, 0.62, 0.0, 0.9, step * 1.2)
    tmid = 0.5 * (mouth.up(tx) + mouth.lo(tx))
    tpts = place(tx, tmid + ty - 0.02, depth + 0.22)
    part.add(tpts, normal, sigma * 1.2, TONGUE, LAYER_JAW, FLAG_TONGUE)
    # dark cavity: deepest, large enough for a wide jaw opening
    cx, cy = _grid(-1.4, 1.4, -0.9, 1.8, step * 1.6)
    # a rounded box, wider than the lips: it lies deep (behind the rotated jaw), so a turned head
    # sees it shifted sideways; below the lips it narrows like the jaw's opening does
    oval = (((cx / 1.4) ** 4 + ((cy - 0.45) / 1.35) ** 4 < 1.0) & (cy <= 0.6)) | (
        (cx / 1.2) ** 2 + ((cy - 0.6) / (CAVITY_BOTTOM - 0.6)) ** 2 < 1.0
    )
    part.add(place(cx[oval], cy[oval], depth + 1.1), normal, sigma * 1.6, CAVITY, LAYER_MOUTH)


def eyeball(
    part: Part,
    eye: Opening,
    depth: float,
    step: float,
    color_fn: ColorFn | None = None,
    sclera: np.ndarray | None = None,
    iris: np.ndarray | None = None,
) -> None:
    """An eyeball plane behind the lids, a little larger than the opening (room for gaze)."""
    a = eye.half_width
    mx, my = _grid(-1.3, 1.3, -1.0, 1.0, step)
    pts = eye.centre + a * (mx[:, None] * eye.ex + my[:, None] * eye.ey + depth * eye.ez)
    sclera = np.array([0.9, 0.88, 0.85]) if sclera is None else sclera
    iris_c = np.array([0.25, 0.18, 0.12]) if iris is None else iris
    r = np.hypot(mx, my)
    col = np.where((r < 0.42)[:, None], iris_c, sclera)
    col = np.where((r < 0.18)[:, None], np.array([0.03, 0.03, 0.03]), col)
    if color_fn is not None:
        photo = color_fn(pts)
        known = np.all(np.isfinite(photo), axis=1)
        col = np.where(known[:, None], photo, col)
    part.add(pts, -eye.ez, SIGMA_PER_STEP * step * a, col, LAYER_EYES)


def to_avatar(
    part: Part,
    feats: FaceFeatures,
    camera: Camera,
    background: np.ndarray,
    metadata: dict[str, Any],
    opacity: float = 0.99,
    progress: Callable[[str], None] | None = None,
) -> Avatar:
    """Assemble Gaussians + procedural rig into an :class:`Avatar` (channels: :data:`DEFAULT_CHANNELS`)."""
    g = part.cat()
    means = g["means"].astype(np.float32)
    rig = build_rig(
        means,
        g["layers"],
        (g["flags"] & FLAG_DEFORM) > 0,
        feats,
        DEFAULT_CHANNELS,
        tongue=(g["flags"] & FLAG_TONGUE) > 0,
        progress=progress,
    )
    n = len(means)
    avatar = Avatar(
        means=means,
        quats=disc_quats(g["normals"], g["axes"]),
        scales=disc_scales(g["sigma"], stretch=g["stretch"]),
        opacities=np.full(n, opacity, np.float32),
        colors=np.clip(g["colors"], 0.0, 1.0).astype(np.float32),
        layers=g["layers"],
        rig=rig,
        channels=DEFAULT_CHANNELS,
        camera=camera,
        background=np.asarray(background, np.float32),
        metadata=metadata,
    )
    avatar.validate()
    return avatar


def face_metadata(
    feats: FaceFeatures,
    camera: Camera,
    means: np.ndarray,  # [N, 3]
    groups: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Tool metadata: mouth box, inner-lip and eye pixel positions, Gaussian index groups."""

    def project(p: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(p)
        return np.stack(
            [camera.fx * p[:, 0] / p[:, 2] + camera.cx, camera.fy * p[:, 1] / p[:, 2] + camera.cy], 1
        )

    m = feats.mouth
    up = project(means[groups["inner_lip_upper"]])
    lo = project(means[groups["inner_lip_lower"]])
    corners = project(np.stack([m.centre - m.half_width * m.ex, m.centre + m.half_width * m.ex]))
    allp = np.concatenate([up, lo, corners])
    pad_x = 0.35 * (corners[1, 0] - corners[0, 0])
    x0, x1 = allp[:, 0].min() - pad_x, allp[:, 0].max() + pad_x
    y0, y1 = allp[:, 1].min() - pad_x, allp[:, 1].max() + 1.6 * pad_x  # room for the open jaw
    return {
        "mouth_box": [float(x0), float(y0), float(x1), float(y1)],
        "inner_lip_upper_px": up.round(2).tolist(),
        "inner_lip_lower_px": lo.round(2).tolist(),
        "mouth_corners_px": corners.round(2).tolist(),
        "eyes_px": {
            "left": project(feats.eye_left.centre)[0].round(2).tolist(),
            "right": project(feats.eye_right.centre)[0].round(2).tolist(),
        },
        "landmark_gaussians": {k: np.asarray(v).astype(int).tolist() for k, v in groups.items()},
    }
