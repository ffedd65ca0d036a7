"""The public render API: rig parameters in, video frames out (contract item 5).

``render(avatar, params, size, backend, lod)`` checks its inputs, poses the
avatar with :func:`engines.splat.rig.pose` and draws it with
:func:`engines.splat.rasterize.rasterize` through the avatar's camera scaled
to ``size``. Backends: ``"cpu"`` (numba, the real-time CPU path),
``"torch"`` (CUDA when present) and ``"reference"`` (slow; tests).
"""

from __future__ import annotations

from typing import Literal, overload

import numpy as np

from engines.splat.avatar import Avatar
from engines.splat.rasterize import BACKENDS, RasterizeError, rasterize
from engines.splat.rig import RigError, pose

MIN_SIDE = 8
MAX_SIDE = 4096


class RenderError(ValueError):
    """Bad input to :func:`render`; the message says what to pass instead."""


def check_params(avatar: Avatar, params: object) -> np.ndarray:
    """Validate rig parameters: a finite float32 array [B, C] with C = len(avatar.channels)."""
    c = len(avatar.channels)
    if not isinstance(params, np.ndarray):
        raise RenderError(f"params must be a numpy float32 array [B, {c}], got {type(params).__name__}")
    if params.dtype != np.float32:
        raise RenderError(f"params must be float32, got {params.dtype} (use params.astype(np.float32))")
    if params.ndim != 2 or params.shape[1] != c or params.shape[0] < 1:
        raise RenderError(
            f"params must have shape [B, {c}] with B ≥ 1 (one column per channel), got {params.shape}"
        )
    if not np.all(np.isfinite(params)):
        raise RenderError("params contain NaN or infinite values")
    return params


def check_size(size: object) -> tuple[int, int]:
    """Validate an output size (H, W) of ints within [MIN_SIDE, MAX_SIDE]."""
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in size)
    ):
        raise RenderError(f"size must be a pair of ints (H, W), got {size!r}")
    h, w = int(size[0]), int(size[1])
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise RenderError(f"size must be {MIN_SIDE}..{MAX_SIDE} pixels per side, got {h}x{w}")
    return h, w


@overload
def render(
    avatar: Avatar,
    params: np.ndarray,
    size: tuple[int, int] = ...,
    backend: str = ...,
    lod: int = ...,
    return_alpha: Literal[False] = ...,
) -> np.ndarray: ...


@overload
def render(
    avatar: Avatar,
    params: np.ndarray,
    size: tuple[int, int] = ...,
    backend: str = ...,
    lod: int = ...,
    *,
    return_alpha: Literal[True],
) -> tuple[np.ndarray, np.ndarray]: ...


def render(
    avatar: Avatar,
    params: np.ndarray,  # [B, C] float32
    size: tuple[int, int] = (512, 512),  # (H, W)
    backend: str = "cpu",
    lod: int = 0,
    return_alpha: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render B frames: uint8 [B, H, W, 3] (and alpha float32 [B, H, W] with ``return_alpha``).

    ``lod`` 0 draws every Gaussian; ``lod`` k ≥ 1 draws the distilled level
    ``avatar.lods[k - 1]`` (see :mod:`export.distill`).
    """
    if backend not in BACKENDS:
        raise RenderError(f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    params = check_params(avatar, params)
    h, w = check_size(size)
    if isinstance(lod, bool) or not isinstance(lod, int | np.integer) or not 0 <= lod <= len(avatar.lods):
        raise RenderError(f"lod must be an int in 0..{len(avatar.lods)} for this avatar, got {lod!r}")
    try:
        posed = pose(avatar, params, lod=int(lod))
        camera = avatar.camera.scaled(h, w)
        rgb, alpha = rasterize(posed, camera, avatar.background, backend=backend, return_alpha=True)
    except (RigError, RasterizeError) as exc:
        raise RenderError(str(exc)) from exc
    if return_alpha:
        return rgb, alpha
    return rgb
