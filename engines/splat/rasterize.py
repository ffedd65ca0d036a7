"""``rasterize()``: checks at the boundary, then one of the rasteriser backends.

Backends (same semantics, see :mod:`engines.splat.raster_reference`):

- ``"reference"``: plain numpy, float64, slow; the definition the others are tested against.
- ``"cpu"``: numba, tile-based, parallel over tiles, nogil (the real-time CPU path).
- ``"torch"``: vectorised torch; runs on CUDA when present (torch is imported lazily).
"""

from __future__ import annotations

from typing import Literal, get_args, overload

import numpy as np

from engines.splat.types import Camera, PosedGaussians, SplatShapeError

RenderBackend = Literal["reference", "cpu", "torch"]  # the names settings, CLI and services accept
BACKENDS: tuple[RenderBackend, ...] = get_args(RenderBackend)
MAX_IMAGE_SIDE = 8192


class RasterizeError(ValueError):
    """Bad input to :func:`rasterize` (shapes, dtypes, camera, backend name)."""


def check_inputs(g: PosedGaussians, camera: Camera, background: np.ndarray, backend: str) -> np.ndarray:
    """Validate everything :func:`rasterize` takes; returns the background as float32 [3]."""
    if backend not in BACKENDS:
        raise RasterizeError(f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    try:
        g.validate()
    except SplatShapeError as exc:
        raise RasterizeError(str(exc)) from exc
    if not (1 <= camera.width <= MAX_IMAGE_SIDE and 1 <= camera.height <= MAX_IMAGE_SIDE):
        raise RasterizeError(
            f"image size must be 1..{MAX_IMAGE_SIDE} per side, got {camera.height}x{camera.width}"
        )
    intrinsics = np.array([camera.fx, camera.fy, camera.cx, camera.cy], dtype=np.float64)
    if not np.all(np.isfinite(intrinsics)) or camera.fx <= 0 or camera.fy <= 0:
        raise RasterizeError(f"camera intrinsics must be finite with fx, fy > 0, got {camera}")
    bg = np.asarray(background, dtype=np.float32)
    if bg.shape != (3,) or not np.all(np.isfinite(bg)):
        raise RasterizeError(f"background must be 3 finite floats in [0, 1], got {background!r}")
    return bg


@overload
def rasterize(
    g: PosedGaussians,
    camera: Camera,
    background: np.ndarray,
    backend: RenderBackend = ...,
    return_alpha: Literal[False] = ...,
) -> np.ndarray: ...


@overload
def rasterize(
    g: PosedGaussians,
    camera: Camera,
    background: np.ndarray,
    backend: RenderBackend = ...,
    *,
    return_alpha: Literal[True],
) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def rasterize(
    g: PosedGaussians,
    camera: Camera,
    background: np.ndarray,
    backend: RenderBackend = ...,
    *,
    return_alpha: bool,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]: ...


def rasterize(
    g: PosedGaussians,
    camera: Camera,
    background: np.ndarray,  # [3] float in [0, 1]
    backend: RenderBackend = "cpu",
    return_alpha: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Draw posed Gaussians: uint8 [B, H, W, 3], or (that, alpha float32 [B, H, W]) with ``return_alpha``.

    The image size is ``camera.height`` × ``camera.width``.
    """
    bg = check_inputs(g, camera, background, backend)
    if backend == "cpu":
        from engines.splat.raster_cpu import rasterize_cpu

        rgb, alpha = rasterize_cpu(g, camera, bg)
    elif backend == "torch":
        from engines.splat.raster_torch import rasterize_torch

        rgb, alpha = rasterize_torch(g, camera, bg)
    else:
        from engines.splat.raster_reference import rasterize_reference

        rgb, alpha = rasterize_reference(g, camera, bg)
    if return_alpha:
        return rgb, alpha
    return rgb
