"""The CPU splat rasteriser: numba, tile-based, parallel over tiles, nogil.

Same semantics as :mod:`engines.splat.raster_reference` (contract item 2),
tested against it. Per frame:

1. preprocess (parallel over Gaussians): project, 2D covariance and its
   inverse (the conic), the pixel bounding box of the part of the 3σ ellipse
   where α ≥ 1/255 can hold (tighter for faint Gaussians), cull z < 0.01 and
   boxes that miss the image;
2. stable depth sort of the visible Gaussians;
3. bin them to 16×16 tiles (count, prefix sum, fill; each tile's list stays in
   depth order);
4. ``prange`` over tiles: front-to-back compositing of the tile's Gaussians,
   row by row over the exact horizontal span of the ellipse on that row,
   skipping finished pixels, and leaving the tile as soon as every pixel's
   transmittance is below 1e-4.

All kernels are ``nogil`` so the render worker threads of the server can run
them beside the event loop; ``cache=True`` keeps the compile out of later
process starts. Call :func:`warmup` once at start to compile.
"""

from __future__ import annotations

import logging
import math
import time

import numba
import numpy as np

from engines.splat.types import Camera, PosedGaussians

logger = logging.getLogger(__name__)

TILE = 16
_NEAR_Z = 0.01
_MAX_D = 9.0
_ALPHA_MAX = 0.99
_ALPHA_MIN = 1.0 / 255.0
_T_STOP = 1e-4
_BLUR = 0.3
# exp(-d/2) for d in [0, 9] from a 1152-entry table with linear interpolation:
# the error bound (Δ²/8)·max|f''| = (1/128)²/8/4 ≈ 2e-6 is far below 1/255.
_LUT_SCALE = 128.0
_LUT_SIZE = int(_MAX_D * _LUT_SCALE)

# fastmath lets LLVM use approximate exp/sqrt and reassociate the float32
# pixel arithmetic; the reference-agreement tests hold with it.
_FASTMATH = True


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FASTMATH)
def _preprocess(
    means: np.ndarray,  # [N, 3] float32
    quats: np.ndarray,  # [N, 4] float32
    scales: np.ndarray,  # [N, 3] float32
    opacities: np.ndarray,  # [N] float32
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    width: int,
    height: int,
    feat: np.ndarray,  # [N, 6] float32 out: u, v, conic a, b, c, opacity
    rect: np.ndarray,  # [N, 4] int32 out: j0, j1, i0, i1 (inclusive); j0 > j1 when culled
    depth: np.ndarray,  # [N] float32 out: z, +inf when culled
) -> None:
    n = means.shape[0]
    for k in numba.prange(n):
        x = np.float64(means[k, 0])
        y = np.float64(means[k, 1])
        z = np.float64(means[k, 2])
        o = np.float64(opacities[k])
        rect[k, 0] = 1
        rect[k, 1] = 0
        rect[k, 2] = 1
        rect[k, 3] = 0
        depth[k] = np.inf
        if not (z >= _NEAR_Z) or not (o > 0.0):
            continue
        # rotation from the (renormalised) quaternion
        qw = np.float64(quats[k, 0])
        qx = np.float64(quats[k, 1])
        qy = np.float64(quats[k, 2])
        qz = np.float64(quats[k, 3])
        qn = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        if qn == 0.0:
            continue
        qw /= qn
        qx /= qn
        qy /= qn
        qz /= qn
        r00 = 1 - 2 * (qy * qy + qz * qz)
        r01 = 2 * (qx * qy - qw * qz)
        r02 = 2 * (qx * qz + qw * qy)
        r10 = 2 * (qx * qy + qw * qz)
        r11 = 1 - 2 * (qx * qx + qz * qz)
        r12 = 2 * (qy * qz - qw * qx)
        r20 = 2 * (qx * qz - qw * qy)
        r21 = 2 * (qy * qz + qw * qx)
        r22 = 1 - 2 * (qx * qx + qy * qy)
        s0 = np.float64(scales[k, 0]) ** 2
        s1 = np.float64(scales[k, 1]) ** 2
        s2 = np.float64(scales[k, 2]) ** 2
        # Σ = R diag(s²) Rᵀ (symmetric)
        c00 = r00 * r00 * s0 + r01 * r01 * s1 + r02 * r02 * s2
        c01 = r00 * r10 * s0 + r01 * r11 * s1 + r02 * r12 * s2
        c02 = r00 * r20 * s0 + r01 * r21 * s1 + r02 * r22 * s2
        c11 = r10 * r10 * s0 + r11 * r11 * s1 + r12 * r12 * s2
        c12 = r10 * r20 * s0 + r11 * r21 * s1 + r12 * r22 * s2
        c22 = r20 * r20 * s0 + r21 * r21 * s1 + r22 * r22 * s2
        # J = [[fx/z, 0, -fx x/z²], [0, fy/z, -fy y/z²]]
        j00 = fx / z
        j02 = -fx * x / (z * z)
        j11 = fy / z
        j12 = -fy * y / (z * z)
        # Σ2D = J Σ Jᵀ + blur·I
        t00 = j00 * c00 + j02 * c02
        t01 = j00 * c01 + j02 * c12
        t02 = j00 * c02 + j02 * c22
        t11 = j11 * c11 + j12 * c12
        t12 = j11 * c12 + j12 * c22
        a2 = t00 * j00 + t02 * j02 + _BLUR
        b2 = t01 * j11 + t02 * j12
        c2 = t11 * j11 + t12 * j12 + _BLUR
        det = a2 * c2 - b2 * b2
        if not (det > 0.0):
            continue
        u = fx * x / z + cx
        v = fy * y / z + cy
        # only d ≤ min(9, 2 ln(255 o)) can give α ≥ 1/255 inside the 3σ ellipse
        dmax = _MAX_D
        lim = 2.0 * math.log(o * 255.0) + 1e-3
        if lim < dmax:
            dmax = lim
        if dmax <= 0.0:
            continue
        ru = math.sqrt(dmax * a2)
        rv = math.sqrt(dmax * c2)
        fj0 = math.ceil(u - ru - 0.5)
        fj1 = math.floor(u + ru - 0.5)
        fi0 = math.ceil(v - rv - 0.5)
        fi1 = math.floor(v + rv - 0.5)
        if fj1 < 0 or fi1 < 0 or fj0 > width - 1 or fi0 > height - 1:
            continue
        rect[k, 0] = max(int(fj0), 0)
        rect[k, 1] = min(int(fj1), width - 1)
        rect[k, 2] = max(int(fi0), 0)
        rect[k, 3] = min(int(fi1), height - 1)
        feat[k, 0] = u
        feat[k, 1] = v
        feat[k, 2] = c2 / det
        feat[k, 3] = -b2 / det
        feat[k, 4] = a2 / det
        feat[k, 5] = o
        depth[k] = z


@numba.njit(cache=True, nogil=True)
def _bin(
    order: np.ndarray,  # [N] int64 depth order
    rect: np.ndarray,  # [N, 4] int32
    tiles_x: int,
    tiles_y: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile Gaussian lists in depth order: (starts [T + 1] int64, ids [E] int32)."""
    n_tiles = tiles_x * tiles_y
    counts = np.zeros(n_tiles + 1, dtype=np.int64)
    for r in range(order.shape[0]):
        k = order[r]
        if rect[k, 0] > rect[k, 1]:
            break  # culled ones sort last (depth +inf)
        tx0 = rect[k, 0] // TILE
        tx1 = rect[k, 1] // TILE
        ty0 = rect[k, 2] // TILE
        ty1 = rect[k, 3] // TILE
        for ty in range(ty0, ty1 + 1):
            for tx in range(tx0, tx1 + 1):
                counts[ty * tiles_x + tx + 1] += 1
    for t in range(n_tiles):
        counts[t + 1] += counts[t]
    starts = counts.copy()
    ids = np.empty(counts[n_tiles], dtype=np.int32)
    fill = counts[:n_tiles].copy()
    for r in range(order.shape[0]):
        k = order[r]
        if rect[k, 0] > rect[k, 1]:
            break
        tx0 = rect[k, 0] // TILE
        tx1 = rect[k, 1] // TILE
        ty0 = rect[k, 2] // TILE
        ty1 = rect[k, 3] // TILE
        for ty in range(ty0, ty1 + 1):
            for tx in range(tx0, tx1 + 1):
                t = ty * tiles_x + tx
                ids[fill[t]] = k
                fill[t] += 1
    return starts, ids


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FASTMATH)
def _composite(
    starts: np.ndarray,  # [T + 1] int64
    ids: np.ndarray,  # [E] int32
    feat: np.ndarray,  # [N, 6] float32
    rect: np.ndarray,  # [N, 4] int32
    colors: np.ndarray,  # [N, 3] float32
    background: np.ndarray,  # [3] float32
    exp_lut: np.ndarray,  # [_LUT_SIZE + 2] float32: exp(-d/2) at d = k / _LUT_SCALE
    tiles_x: int,
    out_rgb: np.ndarray,  # [H, W, 3] uint8
    out_alpha: np.ndarray,  # [H, W] float32
) -> None:
    height = out_rgb.shape[0]
    width = out_rgb.shape[1]
    n_tiles = starts.shape[0] - 1
    max_d = np.float32(_MAX_D)
    alpha_max = np.float32(_ALPHA_MAX)
    alpha_min = np.float32(_ALPHA_MIN)
    t_stop = np.float32(_T_STOP)
    lut_scale = np.float32(_LUT_SCALE)
    half = np.float32(0.5)
    one = np.float32(1.0)
    two = np.float32(2.0)
    for t in numba.prange(n_tiles):
        ty = t // tiles_x
        tx = t - ty * tiles_x
        x0 = tx * TILE
        y0 = ty * TILE
        x1 = min(x0 + TILE, width) - 1
        y1 = min(y0 + TILE, height) - 1
        acc_r = np.zeros((TILE, TILE), dtype=np.float32)
        acc_g = np.zeros((TILE, TILE), dtype=np.float32)
        acc_b = np.zeros((TILE, TILE), dtype=np.float32)
        trans = np.ones((TILE, TILE), dtype=np.float32)
        remaining = (x1 - x0 + 1) * (y1 - y0 + 1)
        for e in range(starts[t], starts[t + 1]):
            if remaining == 0:
                break
            k = ids[e]
            u = feat[k, 0]
            v = feat[k, 1]
            ca = feat[k, 2]
            cb = feat[k, 3]
            cc = feat[k, 4]
            o = feat[k, 5]
            cr = colors[k, 0]
            cg = colors[k, 1]
            cbl = colors[k, 2]
            gi0 = max(rect[k, 2], y0)
            gi1 = min(rect[k, 3], y1)
            gj0 = max(rect[k, 0], x0)
            gj1 = min(rect[k, 1], x1)
            for i in range(gi0, gi1 + 1):
                dv = np.float32(i) + half - v
                # exact span of d ≤ 9 on this row: ca·du² + 2·cb·du·dv + cc·dv² ≤ 9
                row_d = cc * dv * dv
                disc = (cb * dv) * (cb * dv) - ca * (row_d - max_d)
                if disc < 0.0:
                    continue
                sq = math.sqrt(disc)
                ulo = u + (-cb * dv - sq) / ca
                uhi = u + (-cb * dv + sq) / ca
                j0 = max(gj0, math.floor(ulo - half))
                j1 = min(gj1, math.floor(uhi - half) + 1)
                li = i - y0
                lin = two * cb * dv
                for j in range(j0, j1 + 1):
                    lj = j - x0
                    tr = trans[li, lj]
                    if tr < t_stop:
                        continue
                    du = np.float32(j) + half - u
                    d = (ca * du + lin) * du + row_d
                    if d > max_d or d < 0.0:
                        continue
                    # exp(-d/2) by linear interpolation in a table (abs error < 3e-6)
                    x = d * lut_scale
                    ix = int(x)
                    fr = x - np.float32(ix)
                    e0 = exp_lut[ix]
                    a = o * (e0 + fr * (exp_lut[ix + 1] - e0))
                    if a > alpha_max:
                        a = alpha_max
                    if a < alpha_min:
                        continue
                    w = a * tr
                    acc_r[li, lj] += cr * w
                    acc_g[li, lj] += cg * w
                    acc_b[li, lj] += cbl * w
                    tr = tr * (one - a)
                    trans[li, lj] = tr
                    if tr < t_stop:
                        remaining -= 1
        for i in range(y0, y1 + 1):
            li = i - y0
            for j in range(x0, x1 + 1):
                lj = j - x0
                tr = trans[li, lj]
                _store(out_rgb, i, j, 0, acc_r[li, lj] + tr * background[0])
                _store(out_rgb, i, j, 1, acc_g[li, lj] + tr * background[1])
                _store(out_rgb, i, j, 2, acc_b[li, lj] + tr * background[2])
                out_alpha[i, j] = one - tr


@numba.njit(cache=True, nogil=True, inline="always")
def _store(out_rgb: np.ndarray, i: int, j: int, ch: int, value: float) -> None:
    q = math.floor(value * 255.0 + 0.5)  # an integer in numba
    out_rgb[i, j, ch] = np.uint8(min(max(q, 0), 255))


def _make_exp_lut() -> np.ndarray:
    """exp(-d/2) sampled at d = k / _LUT_SCALE, k = 0 … _LUT_SIZE + 1 (float32)."""
    d = np.arange(_LUT_SIZE + 2, dtype=np.float64) / _LUT_SCALE
    return np.exp(-0.5 * d).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _depth_order(depth: np.ndarray) -> np.ndarray:
    """Stable ascending order (ties keep index order); culled (+inf) last."""
    return np.argsort(depth, kind="mergesort")


def _draw_frame(
    means: np.ndarray,  # [N, 3] float32
    quats: np.ndarray,  # [N, 4] float32
    scales: np.ndarray,  # [N, 3] float32
    opacities: np.ndarray,  # [N] float32
    colors: np.ndarray,  # [N, 3] float32
    camera: Camera,
    background: np.ndarray,  # [3] float32
    exp_lut: np.ndarray,  # [_LUT_SIZE + 2] float32
    out_rgb: np.ndarray,  # [H, W, 3] uint8
    out_alpha: np.ndarray,  # [H, W] float32
) -> None:
    n = means.shape[0]
    feat = np.empty((n, 6), dtype=np.float32)
    rect = np.empty((n, 4), dtype=np.int32)
    depth = np.empty(n, dtype=np.float32)
    _preprocess(
        means,
        quats,
        scales,
        opacities,
        float(camera.fx),
        float(camera.fy),
        float(camera.cx),
        float(camera.cy),
        int(camera.width),
        int(camera.height),
        feat,
        rect,
        depth,
    )
    order = _depth_order(depth)
    tiles_x = (camera.width + TILE - 1) // TILE
    tiles_y = (camera.height + TILE - 1) // TILE
    starts, ids = _bin(order, rect, tiles_x, tiles_y)
    _composite(starts, ids, feat, rect, colors, background, exp_lut, tiles_x, out_rgb, out_alpha)


def rasterize_cpu(
    g: PosedGaussians,
    camera: Camera,
    background: np.ndarray,  # [3] float in [0, 1]
) -> tuple[np.ndarray, np.ndarray]:
    """Draw every frame of ``g``: rgb uint8 [B, H, W, 3] and alpha float32 [B, H, W].

    Frames are drawn one after another, each parallel over its tiles.
    Inputs are assumed checked (see :func:`engines.splat.rasterize.rasterize`).
    """
    b = g.batch
    rgb = np.empty((b, camera.height, camera.width, 3), dtype=np.uint8)
    alpha = np.empty((b, camera.height, camera.width), dtype=np.float32)
    bg = np.ascontiguousarray(background, dtype=np.float32)
    exp_lut = _make_exp_lut()
    # tiles differ a lot in cost (face vs background): hand them out in small chunks
    # rather than one contiguous half of the image per thread
    previous_chunksize = numba.set_parallel_chunksize(2)
    try:
        for f in range(b):
            _draw_frame(
                np.ascontiguousarray(g.means[f]),
                np.ascontiguousarray(g.quats[f]),
                np.ascontiguousarray(g.scales[f]),
                np.ascontiguousarray(g.opacities[f]),
                np.ascontiguousarray(g.colors[f]),
                camera,
                bg,
                exp_lut,
                rgb[f],
                alpha[f],
            )
    finally:
        numba.set_parallel_chunksize(previous_chunksize)
    return rgb, alpha


def warmup() -> float:
    """Compile (or load from the numba cache) every kernel on a tiny input; returns seconds taken."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    n = 8
    means = np.concatenate(
        [rng.uniform(-0.2, 0.2, (1, n, 2)), rng.uniform(1.0, 2.0, (1, n, 1))], axis=-1
    ).astype(np.float32)
    quats = np.zeros((1, n, 4), dtype=np.float32)
    quats[..., 0] = 1.0
    g = PosedGaussians(
        means=means,
        quats=quats,
        scales=np.full((1, n, 3), 0.05, dtype=np.float32),
        opacities=np.full((1, n), 0.8, dtype=np.float32),
        colors=rng.uniform(0, 1, (1, n, 3)).astype(np.float32),
    )
    cam = Camera(fx=40.0, fy=40.0, cx=16.0, cy=16.0, width=32, height=32)
    rasterize_cpu(g, cam, np.zeros(3, dtype=np.float32))
    elapsed = time.perf_counter() - start
    logger.info("raster_cpu: warm-up took %.2f s on %d numba threads", elapsed, numba.get_num_threads())
    return elapsed
