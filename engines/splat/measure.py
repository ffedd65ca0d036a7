"""Geometric measurements on a posed avatar, for tests, the preview and benchmarks.

* :func:`lip_aperture_px`: inner-lip distance in pixels, from the Gaussians that sit on
  the inner-lip landmarks (``metadata["landmark_gaussians"]``);
* :func:`without_static`: the avatar with its static layer made invisible, so that the
  alpha of a render tells whether the head itself has holes;
* :func:`head_silhouette`: the pixels the posed head covers (filled, eroded).
"""

from __future__ import annotations

import copy

import numpy as np

from engines.splat.avatar import LAYER_STATIC, Avatar
from engines.splat.rig import pose
from engines.splat.types import Camera


class MeasureError(ValueError):
    """The avatar lacks the metadata a measurement needs."""


def _project(means: np.ndarray, cam: Camera) -> np.ndarray:
    """[..., 3] camera space → [..., 2] pixels (u, v)."""
    return np.stack(
        [cam.fx * means[..., 0] / means[..., 2] + cam.cx, cam.fy * means[..., 1] / means[..., 2] + cam.cy],
        axis=-1,
    )


def lip_aperture_px(avatar: Avatar, params: np.ndarray) -> np.ndarray:
    """Largest inner-lip opening (lower minus upper lip, pixels at the camera's size) per frame: float64 [B].

    Negative values mean the lips overlap (pressed together).
    """
    groups = avatar.metadata.get("landmark_gaussians", {})
    if "inner_lip_upper" not in groups or "inner_lip_lower" not in groups:
        raise MeasureError("avatar metadata has no inner-lip landmark Gaussians")
    up = np.asarray(groups["inner_lip_upper"], dtype=np.int64)
    lo = np.asarray(groups["inner_lip_lower"], dtype=np.int64)
    g = pose(avatar, params)
    uv_up = _project(g.means[:, up].astype(np.float64), avatar.camera)
    uv_lo = _project(g.means[:, lo].astype(np.float64), avatar.camera)
    return np.max(uv_lo[..., 1] - uv_up[..., 1], axis=1)


def without_static(avatar: Avatar) -> Avatar:
    """A copy whose static (torso/background) Gaussians are too faint to draw (α < 1/255)."""
    out = copy.copy(avatar)
    out.opacities = avatar.opacities.copy()
    out.opacities[avatar.layers == LAYER_STATIC] = 1e-4
    out.lods = []
    return out


def head_silhouette(avatar: Avatar, params: np.ndarray, erode: int = 5) -> np.ndarray:
    """bool [B, H, W]: pixels covered by the posed head (every non-static layer), holes filled, eroded.

    The erosion (``erode`` pixels) drops the soft rim that the outermost Gaussians
    leave (their σ is a few pixels): what remains must be fully opaque.
    """
    from scipy.ndimage import binary_closing, binary_erosion, binary_fill_holes

    cam = avatar.camera
    g = pose(avatar, params)
    sel = avatar.layers != LAYER_STATIC
    uv = _project(g.means[:, sel].astype(np.float64), cam)
    out = np.zeros((g.batch, cam.height, cam.width), dtype=bool)
    for b in range(g.batch):
        ij = np.floor(uv[b]).astype(int)
        ok = (ij[:, 0] >= 0) & (ij[:, 0] < cam.width) & (ij[:, 1] >= 0) & (ij[:, 1] < cam.height)
        m = np.zeros((cam.height, cam.width), dtype=bool)
        m[ij[ok, 1], ij[ok, 0]] = True
        m = binary_fill_holes(binary_closing(m, iterations=3))
        out[b] = binary_erosion(m, iterations=erode) if erode else m
    return out
