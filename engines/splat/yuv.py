"""RGB → I420 (planar YUV 4:2:0) as video encoders take it: BT.601, limited range, 2×2 chroma mean.

A VP8 or H.264 encoder wants I420; handing it frames already in that layout
saves a colour conversion (and a copy) per frame on the way to the encoder.
Two implementations of one definition:

* :func:`rgb_to_i420_reference`: plain numpy in float64, the definition;
* :func:`rgb_to_i420`: numba, the fast path for renderers that produce RGB
  (the CPU rasteriser writes I420 itself, see
  :func:`engines.splat.raster_cpu.rasterize_cpu_i420`).

The definition: for 8-bit sRGB ``R, G, B`` (BT.601 coefficients, the range
``[16, 235]`` for luma and ``[16, 240]`` for chroma, as FFmpeg's swscale
converts ``rgb24`` to ``yuv420p`` and as browsers read VP8 without colour
metadata)::

    Y  = 16  + ( 65.481·R + 128.553·G +  24.966·B) / 255
    Cb = 128 + (-37.797·R −  74.203·G + 112.000·B) / 255
    Cr = 128 + (112.000·R −  93.786·G −  18.214·B) / 255

with Cb, Cr of a 2×2 block computed from the block's mean R, G, B, each
rounded half up to uint8. On rendered avatar frames swscale agrees with
this to within 1 on luma and 3 on chroma (tests/test_yuv.py).

Layout: one uint8 array ``[H·3/2, W]``: the Y plane (H rows), then U
(H/2 × W/2) and V (H/2 × W/2) packed row after row into the remaining
H/2 rows, which is what ``av.VideoFrame.from_ndarray(..., format="yuv420p")``
takes. H and W must be even.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# BT.601 limited range, per 8-bit RGB unit (the coefficients above divided by 255)
Y_RGB = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
U_RGB = (-37.797 / 255.0, -74.203 / 255.0, 112.0 / 255.0)
V_RGB = (112.0 / 255.0, -93.786 / 255.0, -18.214 / 255.0)


class YUVError(ValueError):
    """An image cannot be converted to I420 (shape, dtype, odd size)."""


def i420_shape(height: int, width: int) -> tuple[int, int]:
    """Shape of one I420 frame of ``height`` × ``width`` pixels (both even)."""
    if height % 2 or width % 2 or height <= 0 or width <= 0:
        raise YUVError(f"I420 needs an even, positive height and width, got {height}x{width}")
    return height * 3 // 2, width


def i420_planes(frame: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views (Y [H, W], U [H/2, W/2], V [H/2, W/2]) into one contiguous I420 frame ``[H·3/2, W]``."""
    if frame.shape != i420_shape(height, width) or not frame.flags.c_contiguous:
        raise YUVError(
            f"expected a contiguous I420 frame of shape {i420_shape(height, width)}, got {frame.shape}"
        )
    flat = frame.reshape(-1)
    luma, chroma = height * width, (height // 2) * (width // 2)
    y = flat[:luma].reshape(height, width)
    u = flat[luma : luma + chroma].reshape(height // 2, width // 2)
    v = flat[luma + chroma :].reshape(height // 2, width // 2)
    return y, u, v


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if (
        not isinstance(rgb, np.ndarray)
        or rgb.dtype != np.uint8
        or rgb.ndim not in (3, 4)
        or rgb.shape[-1] != 3
    ):
        shape = getattr(rgb, "shape", None)
        raise YUVError(f"expected uint8 RGB [H, W, 3] or [B, H, W, 3], got {type(rgb).__name__} {shape}")
    i420_shape(rgb.shape[-3], rgb.shape[-2])
    return rgb


def _round_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def rgb_to_i420_reference(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] (or [B, H, W, 3]) → uint8 I420 [H·3/2, W] (or [B, H·3/2, W]); float64 numpy."""
    rgb = _check_rgb(rgb)
    batched = rgb.ndim == 4
    frames = rgb if batched else rgb[None]
    b, h, w, _ = frames.shape
    out = np.empty((b, *i420_shape(h, w)), dtype=np.uint8)
    for k in range(b):
        x = frames[k].astype(np.float64)
        y_plane, u_plane, v_plane = i420_planes(out[k], h, w)
        y_plane[:] = _round_u8(16.0 + x @ np.asarray(Y_RGB))
        block = x.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))  # [H/2, W/2, 3]
        u_plane[:] = _round_u8(128.0 + block @ np.asarray(U_RGB))
        v_plane[:] = _round_u8(128.0 + block @ np.asarray(V_RGB))
    return out if batched else out[0]


@numba.njit(cache=True, nogil=True, inline="always")
def _u8(value: float) -> np.uint8:
    q = math.floor(value + 0.5)  # an integer in numba
    return np.uint8(min(max(q, 0), 255))


@numba.njit(cache=True, nogil=True, inline="always")
def block_to_i420(
    r: np.ndarray,  # [4] float32: the 2×2 block's R in 0..255 (row-major: top-left, top-right, bottom-left, bottom-right)
    g: np.ndarray,  # [4] float32
    b: np.ndarray,  # [4] float32
    y_plane: np.ndarray,  # [H, W] uint8 out
    u_plane: np.ndarray,  # [H/2, W/2] uint8 out
    v_plane: np.ndarray,  # [H/2, W/2] uint8 out
    bi: int,  # block row (pixel row 2·bi)
    bj: int,  # block column (pixel column 2·bj)
) -> None:
    """Write one 2×2 block of 8-bit RGB values (already rounded) into the three I420 planes."""
    yr, yg, yb = np.float32(Y_RGB[0]), np.float32(Y_RGB[1]), np.float32(Y_RGB[2])
    for q in range(4):
        y_plane[2 * bi + q // 2, 2 * bj + q % 2] = _u8(np.float32(16.0) + yr * r[q] + yg * g[q] + yb * b[q])
    mr = (r[0] + r[1] + r[2] + r[3]) * np.float32(0.25)
    mg = (g[0] + g[1] + g[2] + g[3]) * np.float32(0.25)
    mb = (b[0] + b[1] + b[2] + b[3]) * np.float32(0.25)
    u_plane[bi, bj] = _u8(
        np.float32(128.0) + np.float32(U_RGB[0]) * mr + np.float32(U_RGB[1]) * mg + np.float32(U_RGB[2]) * mb
    )
    v_plane[bi, bj] = _u8(
        np.float32(128.0) + np.float32(V_RGB[0]) * mr + np.float32(V_RGB[1]) * mg + np.float32(V_RGB[2]) * mb
    )


@numba.njit(cache=True, nogil=True, parallel=True)
def _rgb_to_i420(rgb: np.ndarray, y_plane: np.ndarray, u_plane: np.ndarray, v_plane: np.ndarray) -> None:
    hb = rgb.shape[0] // 2
    wb = rgb.shape[1] // 2
    for bi in numba.prange(hb):
        r = np.empty(4, np.float32)
        g = np.empty(4, np.float32)
        b = np.empty(4, np.float32)
        for bj in range(wb):
            for q in range(4):
                i = 2 * bi + q // 2
                j = 2 * bj + q % 2
                r[q] = rgb[i, j, 0]
                g[q] = rgb[i, j, 1]
                b[q] = rgb[i, j, 2]
            block_to_i420(r, g, b, y_plane, u_plane, v_plane, bi, bj)


def rgb_to_i420(rgb: np.ndarray) -> np.ndarray:
    """:func:`rgb_to_i420_reference` in numba (float32; within one step of the reference)."""
    rgb = _check_rgb(rgb)
    batched = rgb.ndim == 4
    frames = rgb if batched else rgb[None]
    b, h, w, _ = frames.shape
    out = np.empty((b, *i420_shape(h, w)), dtype=np.uint8)
    for k in range(b):
        _rgb_to_i420(np.ascontiguousarray(frames[k]), *i420_planes(out[k], h, w))
    return out if batched else out[0]
