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
   row by row over the Gaussian's box inside the tile with a branch-free
   loop that LLVM vectorises (finished pixels are masked, exp is a
   polynomial), leaving out the 8-pixel half-rows at either end of the box
   whose pixels had all finished at the last check, and leaving the tile as
   soon as every pixel's transmittance is below 1e-4. (Every pixel of a
   half-row left out would have taken α = 0, so the picture is the same.)

All kernels are ``nogil`` so the render worker threads of the server can run
them beside the event loop; ``cache=True`` keeps the compile out of later
process starts. Call :func:`warmup` once at start to compile. Calls from
several threads at once are safe with numba's ``omp`` or ``tbb`` threading
layers (``omp`` is what numba picks here); the ``workqueue`` fallback is not
thread-safe, so callers there must render from one thread (the scheduler's
single CPU render worker does).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from engines.splat.types import Camera, PosedGaussians
from engines.splat.yuv import U_RGB, V_RGB, Y_RGB, _u8, i420_planes, i420_shape

logger = logging.getLogger(__name__)

TILE = 16
_TILE_SHIFT = TILE.bit_length() - 1  # pixel → tile index by a shift (TILE is a power of two)
assert 1 << _TILE_SHIFT == TILE
# Tile pixels are stored as two 8-column halves, each row-major: pixel (row r,
# col c) of a tile lives at (c // 8)·128 + r·8 + c % 8. A Gaussian's rows inside
# one half are then one contiguous run of whole 8-pixel (one AVX2 vector) rows.
HALF = 8
# offsets of a tile's planes in its one float32 buffer [_TILE_BUF]: premultiplied r, g, b, transmittance
_TILE_R = 0
_TILE_G = TILE * TILE
_TILE_B = 2 * TILE * TILE
_TILE_T = 3 * TILE * TILE
# + one half-row of padding: a run's odd last row is blended as a pair with a masked second row
_TILE_BUF = 4 * TILE * TILE + HALF
# column of each lane of a 16-lane pair of half-rows, within its half
_LANE_COL = np.array([c % HALF for c in range(2 * HALF)], dtype=np.float32)
_NEAR_Z = 0.01
_MAX_D = 9.0
_ALPHA_MAX = 0.99
_ALPHA_MIN = 1.0 / 255.0
_T_STOP = 1e-4
_BLUR = 0.3
_CHECK_EVERY = 16  # Gaussians composited between checks whether a tile has finished
# 255·o at and above which 2 ln(255 o) + 1e-3 ≥ _MAX_D, so the log cannot lower a box's d limit
# (e^4.4995 = 89.97, rounded up: a log taken needlessly changes nothing). Most Gaussians of a face are
# nearly opaque; the log was ~10 % of preprocessing
_LOG_NEEDED = 90.0

# fastmath lets LLVM use approximate exp/sqrt and reassociate the float32
# pixel arithmetic; the reference-agreement tests hold with it.
_FASTMATH = True


def _compiles_for_avx512() -> bool:
    """Whether numba's LLVM builds the kernels with AVX-512 (its feature override, else the host's)."""
    features = numba.core.config.CPU_FEATURES  # type: ignore[attr-defined]
    if features is None:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten()
    return "+avx512f" in str(features).split(",")


# How a Gaussian's run of half-rows is blended (see _blend_rows): as 16-lane pairs of half-rows where a
# vector holds 16 floats (AVX-512), as 8-lane half-rows where it holds 8 (AVX2: the pair's 16 lanes took two
# registers for every value and spilled; one half-row at a time composited 33 % faster). Both do the same
# float32 arithmetic per pixel; LLVM fuses multiply-adds differently in the two loops, so over 60 frames of
# the default avatar 3 of 23.6 M I420 samples differ, by one level. Read at each call: a test draws both.
BLEND_PAIRS = _compiles_for_avx512()


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
        if o * 255.0 < _LOG_NEEDED:  # else 2 ln(255 o) + 1e-3 ≥ 9: the log cannot lower dmax
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


@numba.njit(cache=True, nogil=True, inline="always")
def _padded_tiles(n_tiles: int, tiles_x: int) -> int:
    """Tile slots the binning kernels keep per tile, with room past the last tile: a box of at most 2×2
    tiles touches all four tiles of its 2×2 block (adding 0 to those it does not cover), and that block
    may reach tiles_x + 1 tiles past the box's first."""
    return n_tiles + tiles_x + 1


@numba.njit(cache=True, nogil=True)
def _bin_count(
    order: np.ndarray,  # [N] int64 depth order
    rect: np.ndarray,  # [N, 4] int32
    tiles_x: int,
    tiles_y: int,
    span: np.ndarray,  # [N, 4] int32 out: the tile range of the r-th nearest Gaussian
) -> tuple[np.ndarray, int]:
    """How many Gaussians each tile lists: (starts [T + 1] int64, the tile lists' offsets; how many of
    ``order`` are visible). :func:`_bin_fill` then fills the lists."""
    n_tiles = tiles_x * tiles_y
    counts = np.zeros(_padded_tiles(n_tiles, tiles_x) + 1, dtype=np.int64)  # counts[t + 1]: tile t
    # the tile range of the r-th nearest Gaussian, kept from the counting pass: the filling pass then
    # reads it in order instead of reading rect at random again (~0.25 ms of ~1.2 per frame)
    visible = 0
    for r in range(order.shape[0]):
        k = order[r]
        j0 = rect[k, 0]
        j1 = rect[k, 1]
        if j0 > j1:
            break  # culled ones sort last (depth +inf)
        # boxes of visible ones lie inside the image (≥ 0): a shift is the floor division, without the
        # sign fix-up numba emits for //
        tx0 = j0 >> _TILE_SHIFT
        tx1 = j1 >> _TILE_SHIFT
        ty0 = rect[k, 2] >> _TILE_SHIFT
        ty1 = rect[k, 3] >> _TILE_SHIFT
        span[r, 0] = tx0
        span[r, 1] = tx1
        span[r, 2] = ty0
        span[r, 3] = ty1
        visible += 1
        nx = tx1 - tx0
        ny = ty1 - ty0
        if nx <= 1 and ny <= 1:
            # most boxes of a face span 1-2 tiles each way: four adds of 0 or 1, no loops whose length
            # changes from box to box (their exits were mispredicted: ~55 cycles per Gaussian)
            c = ty0 * tiles_x + tx0 + 1
            counts[c] += 1
            counts[c + 1] += nx
            counts[c + tiles_x] += ny
            counts[c + tiles_x + 1] += nx & ny
            continue
        for ty in range(ty0, ty1 + 1):
            row = ty * tiles_x + 1
            for tx in range(tx0, tx1 + 1):
                counts[row + tx] += 1
    for t in range(n_tiles):
        counts[t + 1] += counts[t]
    return counts[: n_tiles + 1], visible


@numba.njit(cache=True, nogil=True)
def _bin_fill(
    order: np.ndarray,  # [N] int64 depth order
    span: np.ndarray,  # [N, 4] int32 from _bin_count
    visible: int,
    starts: np.ndarray,  # [T + 1] int64 from _bin_count
    tiles_x: int,
    ids: np.ndarray,  # [starts[T] + 1] int32 out: per tile in depth order, then one spare slot
) -> None:
    """Fill the tile lists counted by :func:`_bin_count`: each tile's Gaussians in depth order."""
    n_tiles = starts.shape[0] - 1
    spare = ids.shape[0] - 1
    # each tile's next free slot; the padding past the last tile (as in _bin_count) points at the spare
    # slot and is never advanced
    fill = np.full(_padded_tiles(n_tiles, tiles_x), spare, dtype=np.int64)
    fill[:n_tiles] = starts[:-1]
    for r in range(visible):
        k = np.int32(order[r])
        tx0 = span[r, 0]
        ty0 = span[r, 2]
        nx = span[r, 1] - tx0
        ny = span[r, 3] - ty0
        if nx <= 1 and ny <= 1:
            # a box of at most 2×2 tiles (see _bin_count): each of the other three tiles of its 2×2 block
            # gets k written at its next slot and advanced only when the box covers it; else k goes to
            # the spare slot (selects, not branches)
            first = ty0 * tiles_x + tx0
            ids[fill[first]] = k
            fill[first] += 1
            for t, on in ((first + 1, nx), (first + tiles_x, ny), (first + tiles_x + 1, nx & ny)):
                slot = fill[t]
                ids[slot if on else spare] = k
                fill[t] = slot + on
            continue
        for ty in range(ty0, span[r, 3] + 1):
            row = ty * tiles_x
            for tx in range(span[r, 0], span[r, 1] + 1):
                t = row + tx
                ids[fill[t]] = k
                fill[t] += 1


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _blend_row_pairs(
    buf: np.ndarray,  # [_TILE_BUF] float32: the tile's accumulators r, g, b and transmittance (see _TILE_R)
    start: int,  # flat index of the run's first pixel (a half-row start)
    rows: int,  # number of 8-pixel half-rows in the run
    du0: float,  # u-offset of the half's first column from the Gaussian's centre
    dv0: float,  # v-offset of the run's first row
    ca: float,  # conic (inverse 2D covariance) entries
    cb: float,
    cc: float,
    opacity: float,
    cr: float,
    cg: float,
    cbl: float,
) -> None:
    """Composite one Gaussian over a run of ``rows`` 8-pixel half-rows (:data:`BLEND_PAIRS`: AVX-512).

    A branch-free loop over pairs of half-rows: each pair is one 16-lane vector
    (one AVX-512 op; with AVX2 two for every value, which ran out of registers:
    :func:`_blend_half_rows` there), every test is a select and exp(-d/2) is
    a polynomial. Pixels outside the Gaussian's box get α < 1/255 and are left
    untouched, so covering whole half-rows costs a little arithmetic but saves
    the per-row loop set-up that dominated for small splats. An odd last row is
    done as a pair whose second row is masked out (α = 0, so its pixels are
    written back unchanged; the tile buffer has one half-row of padding for the
    last row of the transmittance plane). It counts nothing: a count of finished
    pixels made the loop ~35 % slower, so the caller checks now and then whether
    the whole tile has finished instead.

    The four planes live in one array at fixed distances: LLVM then sees that no
    load or store can overlap another and drops the runtime alias checks before
    the vector loop (six arrays needed 15 pairwise checks, most of the ~35 ns a
    call cost whatever its length; a typical run is 4-8 rows). The lane's column
    comes from a constant table and its row from the pair's two row offsets, so
    no per-lane integer index is converted to float: a flat loop over
    ``rows × 8`` pixels deriving both from a 64-bit index spent ~14 of its ~60
    instructions per 16 pixels on that (that layout left every pixel's float32
    arithmetic as it was).
    """
    one = np.float32(1.0)
    zero = np.float32(0.0)
    # y = d/32 straight from the conic scaled by 1/32 (see _blend_half_rows)
    ca32 = ca * np.float32(1.0 / 32.0)
    cb32 = np.float32(2.0 / 32.0) * cb
    cc32 = cc * np.float32(1.0 / 32.0)
    du0f = np.float32(du0)
    dv0f = np.float32(dv0)
    for i in range((rows + 1) >> 1):
        base = np.uint64(start + 2 * HALF * i)  # unsigned: no negative-index wraparound in the loop
        dva = dv0f + np.float32(2 * i)  # the pair's two rows
        dvb = dv0f + np.float32(2 * i + 1)
        lanes = 2 * HALF if 2 * i + 1 < rows else HALF  # lanes of the pair inside the run
        for lane in range(2 * HALF):
            p = base + np.uint64(lane)
            du = du0f + _LANE_COL[lane]
            dv = dvb if lane >= HALF else dva
            y = (ca32 * du + cb32 * dv) * du + cc32 * dv * dv  # d/32
            # exp(-d/2) = exp(-d/32)^16, exp(-y) by its degree-6 Taylor polynomial on
            # y ≤ 9/32: relative error < 3e-7 over d ≤ 9; evaluated as (1 - y) + y²(…) + y⁴(…) so that
            # its chain of dependent operations is 4 long, not Horner's 6
            y2 = y * y
            ex = (
                (one - y)
                + y2 * (np.float32(0.5) - y * np.float32(1.0 / 6.0))
                + (y2 * y2)
                * (np.float32(1.0 / 24.0) - y * np.float32(1.0 / 120.0) + y2 * np.float32(1.0 / 720.0))
            )
            ex = ex * ex
            ex = ex * ex
            ex = ex * ex
            ex = ex * ex
            tr = buf[p + np.uint64(_TILE_T)]
            a = min(opacity * ex, np.float32(_ALPHA_MAX))
            hit = (
                (y <= np.float32(_MAX_D / 32.0))
                & (a >= np.float32(_ALPHA_MIN))
                & (tr >= np.float32(_T_STOP))
                & (lane < lanes)
            )
            a = a if hit else zero
            w = a * tr
            buf[p + np.uint64(_TILE_R)] += cr * w
            buf[p + np.uint64(_TILE_G)] += cg * w
            buf[p + np.uint64(_TILE_B)] += cbl * w
            buf[p + np.uint64(_TILE_T)] = tr * (one - a)


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _blend_half_rows(
    buf: np.ndarray,  # [_TILE_BUF] float32: the tile's accumulators r, g, b and transmittance (see _TILE_R)
    start: int,  # flat index of the run's first pixel (a half-row start)
    rows: int,  # number of 8-pixel half-rows in the run
    du0: float,  # u-offset of the half's first column from the Gaussian's centre
    dv0: float,  # v-offset of the run's first row
    ca: float,  # conic (inverse 2D covariance) entries
    cb: float,
    cc: float,
    opacity: float,
    cr: float,
    cg: float,
    cbl: float,
) -> None:
    """:func:`_blend_row_pairs` one 8-lane half-row at a time (one AVX2 vector per value), the same
    float32 arithmetic per pixel (see :data:`BLEND_PAIRS`). The per-pixel body is written out in both:
    as a shared ``inline="always"`` function the composite took 36 ms instead of 7.5 (LLVM no longer
    vectorised the loop)."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    # y = d/32 straight from the conic scaled by 1/32: a power of two, so y is the float32 value d · 1/32
    # was, and y ≤ 9/32 where d ≤ 9 held (one multiply and one constant less per pixel: this loop keeps
    # more of its constants in the 16 AVX2 registers instead of loading them again every half-row)
    ca32 = ca * np.float32(1.0 / 32.0)
    cb32 = np.float32(2.0 / 32.0) * cb
    cc32 = cc * np.float32(1.0 / 32.0)
    du0f = np.float32(du0)
    dv0f = np.float32(dv0)
    for i in range(rows):
        base = np.uint64(start + HALF * i)  # unsigned: no negative-index wraparound in the loop
        dv = dv0f + np.float32(i)
        for lane in range(HALF):
            p = base + np.uint64(lane)
            du = du0f + _LANE_COL[lane]
            y = (ca32 * du + cb32 * dv) * du + cc32 * dv * dv  # d/32; exp(-y) as in _blend_row_pairs
            y2 = y * y
            ex = (
                (one - y)
                + y2 * (np.float32(0.5) - y * np.float32(1.0 / 6.0))
                + (y2 * y2)
                * (np.float32(1.0 / 24.0) - y * np.float32(1.0 / 120.0) + y2 * np.float32(1.0 / 720.0))
            )
            ex = ex * ex
            ex = ex * ex
            ex = ex * ex
            ex = ex * ex
            tr = buf[p + np.uint64(_TILE_T)]
            a = min(opacity * ex, np.float32(_ALPHA_MAX))
            hit = (
                (y <= np.float32(_MAX_D / 32.0)) & (a >= np.float32(_ALPHA_MIN)) & (tr >= np.float32(_T_STOP))
            )
            a = a if hit else zero
            w = a * tr
            buf[p + np.uint64(_TILE_R)] += cr * w
            buf[p + np.uint64(_TILE_G)] += cg * w
            buf[p + np.uint64(_TILE_B)] += cbl * w
            buf[p + np.uint64(_TILE_T)] = tr * (one - a)


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _blend_rows(
    buf: np.ndarray,
    start: int,
    rows: int,
    du0: float,
    dv0: float,
    ca: float,
    cb: float,
    cc: float,
    opacity: float,
    cr: float,
    cg: float,
    cbl: float,
    pairs: bool,  # BLEND_PAIRS
) -> None:
    """Composite one Gaussian over a run of ``rows`` half-rows, in the vector shape ``pairs`` picks."""
    if pairs:
        _blend_row_pairs(buf, start, rows, du0, dv0, ca, cb, cc, opacity, cr, cg, cbl)
    else:
        _blend_half_rows(buf, start, rows, du0, dv0, ca, cb, cc, opacity, cr, cg, cbl)


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _finished_rows(trans: np.ndarray, done: np.ndarray) -> bool:
    """Mark in ``done`` [2·TILE] each 8-pixel half-row of the tile (index h·TILE + row, the layout of
    HALF) whose pixels have all stopped (T < 1e-4); True when every one has."""
    all_done = True
    for r in range(2 * TILE):
        m = trans[r * HALF]
        for q in range(1, HALF):
            m = max(m, trans[r * HALF + q])
        done[r] = m < np.float32(_T_STOP)
        all_done = all_done and done[r]
    return all_done


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _accumulate_tile(
    t: int,  # tile index
    starts: np.ndarray,  # [T + 1] int64
    ids: np.ndarray,  # [E] int32
    feat: np.ndarray,  # [N, 6] float32
    rect: np.ndarray,  # [N, 4] int32
    colors: np.ndarray,  # [N, 3] float32
    tiles_x: int,
    height: int,
    width: int,
    buf: np.ndarray,  # [_TILE_BUF] float32 out: premultiplied colour r, g, b of the tile's Gaussians
    # and the transmittance left (what shows through), at _TILE_R/G/B/T
    pairs: bool,  # BLEND_PAIRS
) -> None:
    """Front-to-back compositing of tile ``t``'s Gaussians into the tile buffers (pixel order: see HALF)."""
    ty = t // tiles_x
    tx = t - ty * tiles_x
    x0 = tx * TILE
    y0 = ty * TILE
    x1 = min(x0 + TILE, width) - 1
    y1 = min(y0 + TILE, height) - 1
    half = np.float32(0.5)
    buf[:_TILE_T] = 0.0
    trans = buf[_TILE_T:]
    trans[:] = 1.0
    # pixels of an edge tile that lie outside the image start finished
    for p in range(TILE * TILE):
        if x0 + (p // (TILE * HALF)) * HALF + p % HALF > x1 or y0 + (p % (TILE * HALF)) // HALF > y1:
            trans[p] = 0.0
    # half-rows whose pixels had all stopped at the last check: a Gaussian's rows skip them at either
    # end (~10 % fewer pixels blended on the default avatar; rows in the middle cannot be skipped
    # without splitting the run, which costs more per call than it saves)
    done = np.zeros(2 * TILE, dtype=np.bool_)
    for e in range(starts[t], starts[t + 1]):
        # every _CHECK_EVERY Gaussians: note the finished half-rows, leave the tile once all are
        if (e - starts[t]) % _CHECK_EVERY == _CHECK_EVERY - 1 and _finished_rows(trans, done):
            break
        k = ids[e]
        u = feat[k, 0]
        v = feat[k, 1]
        gi0 = max(rect[k, 2], y0)
        gi1 = min(rect[k, 3], y1)
        h0 = (max(rect[k, 0], x0) - x0) // HALF
        h1 = (min(rect[k, 1], x1) - x0) // HALF
        for h in range(h0, h1 + 1):
            ri0 = gi0
            ri1 = gi1
            while ri0 <= ri1 and done[h * TILE + ri0 - y0]:
                ri0 += 1
            while ri1 >= ri0 and done[h * TILE + ri1 - y0]:
                ri1 -= 1
            if ri0 > ri1:
                continue
            _blend_rows(
                buf,
                h * TILE * HALF + (ri0 - y0) * HALF,
                ri1 - ri0 + 1,
                np.float32(x0 + h * HALF) + half - u,
                np.float32(ri0) + half - v,
                feat[k, 2],
                feat[k, 3],
                feat[k, 4],
                feat[k, 5],
                colors[k, 0],
                colors[k, 1],
                colors[k, 2],
                pairs,
            )


@numba.njit(cache=True, nogil=True, inline="always")
def _tile_pixel(i: int, j: int, y0: int, x0: int) -> int:
    """Index of image pixel (i, j) in the buffers of the tile whose corner is (y0, x0)."""
    return ((j - x0) // HALF) * TILE * HALF + (i - y0) * HALF + (j - x0) % HALF


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FASTMATH)
def _composite(
    starts: np.ndarray,  # [T + 1] int64
    ids: np.ndarray,  # [E] int32
    feat: np.ndarray,  # [N, 6] float32
    rect: np.ndarray,  # [N, 4] int32
    colors: np.ndarray,  # [N, 3] float32
    bg_rgb: np.ndarray,  # [H, W, 3] float32 (a plate) or [1, 1, 3] (one colour): what shows through
    bg_trans: np.ndarray,  # [H, W] or [1, 1] float32: transmittance of what shows through
    tiles_x: int,
    out_rgb: np.ndarray,  # [H, W, 3] uint8
    out_alpha: np.ndarray,  # [H, W] float32
    pairs: bool,  # BLEND_PAIRS
) -> None:
    plate = bg_rgb.shape[0] > 1 or bg_rgb.shape[1] > 1
    height = out_rgb.shape[0]
    width = out_rgb.shape[1]
    n_tiles = starts.shape[0] - 1
    one = np.float32(1.0)
    for t in numba.prange(n_tiles):
        buf = np.empty(_TILE_BUF, dtype=np.float32)
        _accumulate_tile(
            t,
            starts,
            ids,
            feat,
            rect,
            colors,
            tiles_x,
            height,
            width,
            buf,
            pairs,
        )
        y0 = (t // tiles_x) * TILE
        x0 = (t % tiles_x) * TILE
        for i in range(y0, min(y0 + TILE, height)):
            for j in range(x0, min(x0 + TILE, width)):
                p = _tile_pixel(i, j, y0, x0)
                tr = buf[_TILE_T + p]
                bi = i if plate else 0
                bj = j if plate else 0
                _store(out_rgb, i, j, 0, buf[_TILE_R + p] + tr * bg_rgb[bi, bj, 0])
                _store(out_rgb, i, j, 1, buf[_TILE_G + p] + tr * bg_rgb[bi, bj, 1])
                _store(out_rgb, i, j, 2, buf[_TILE_B + p] + tr * bg_rgb[bi, bj, 2])
                out_alpha[i, j] = one - tr * bg_trans[bi, bj]


@numba.njit(cache=True, nogil=True, inline="always")
def _block_sum(buf: np.ndarray, i: int) -> Any:  # a float32 (numba), as buf[i] is
    """The sum of the 2×2 block of tile-buffer levels whose top-left is at ``buf[i]`` (rows are HALF apart)."""
    return buf[i] + buf[i + 1] + buf[i + HALF] + buf[i + HALF + 1]


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FASTMATH)
def _composite_i420(
    starts: np.ndarray,  # [T + 1] int64
    ids: np.ndarray,  # [E] int32
    feat: np.ndarray,  # [N, 6] float32
    rect: np.ndarray,  # [N, 4] int32
    colors: np.ndarray,  # [N, 3] float32
    bg_tiles: np.ndarray,  # [T, 3, TILE·TILE] float32 (a plate, per tile in the tile layout) or [1, 3, TILE·TILE]
    bg_y: np.ndarray,  # [H, W] uint8: the backdrop in I420, copied where a tile has no Gaussian; or [0, 0]
    bg_u: np.ndarray,  # [H/2, W/2] uint8, or [0, 0]
    bg_v: np.ndarray,  # [H/2, W/2] uint8, or [0, 0]
    tiles_x: int,
    out_y: np.ndarray,  # [H, W] uint8
    out_u: np.ndarray,  # [H/2, W/2] uint8
    out_v: np.ndarray,  # [H/2, W/2] uint8
    pairs: bool,  # BLEND_PAIRS
) -> None:
    """:func:`_composite` writing I420 (BT.601 limited range, see :mod:`engines.splat.yuv`), no alpha.

    Each pixel is rounded to 8-bit RGB exactly as :func:`_composite` stores it, then converted per
    2×2 block; H and W are even, so a block never straddles two tiles. A tile's pixels are written
    from its buffer in vector loops: the backdrop comes in the same tile layout (``bg_tiles``, see
    :func:`tile_backdrop`), so the levels, then the luma of all 256 pixels, are each one loop over
    contiguous memory (an interleaved [H, W, 3] plate read pixel by pixel cost ~0.3 ms more a frame).
    A tile that no Gaussian touches is the backdrop's own pixels: when ``bg_y/u/v`` are given (the
    backdrop converted once, by this kernel with no Gaussians, so they are exact) the caller has
    already copied them into ``out_y/u/v`` whole (one copy of the frame costs ~0.01 ms, ~700
    tile-sized ones ~0.17 ms) and such tiles are left as they are; every other tile is written in full.
    """
    plate = bg_tiles.shape[0] > 1
    height = out_y.shape[0]
    width = out_y.shape[1]
    n_tiles = starts.shape[0] - 1
    backdrop_copied = bg_y.shape[0] == height and bg_y.shape[1] == width
    yr, yg, yb = np.float32(Y_RGB[0]), np.float32(Y_RGB[1]), np.float32(Y_RGB[2])
    ur, ug, ub = np.float32(U_RGB[0]), np.float32(U_RGB[1]), np.float32(U_RGB[2])
    vr, vg, vb = np.float32(V_RGB[0]), np.float32(V_RGB[1]), np.float32(V_RGB[2])
    quarter = np.float32(0.25)
    for t in numba.prange(n_tiles):
        y0 = (t // tiles_x) * TILE
        x0 = (t % tiles_x) * TILE
        if backdrop_copied and starts[t] == starts[t + 1]:
            continue
        buf = np.empty(_TILE_BUF, dtype=np.float32)
        _accumulate_tile(t, starts, ids, feat, rect, colors, tiles_x, height, width, buf, pairs)
        bg = bg_tiles[t] if plate else bg_tiles[0]
        # 8-bit levels of the pixels over the backdrop, in place of the premultiplied colours
        for p in range(TILE * TILE):
            tr = buf[_TILE_T + p]
            buf[_TILE_R + p] = _level(buf[_TILE_R + p] + tr * bg[0, p])
            buf[_TILE_G + p] = _level(buf[_TILE_G + p] + tr * bg[1, p])
            buf[_TILE_B + p] = _level(buf[_TILE_B + p] + tr * bg[2, p])
        luma = np.empty(TILE * TILE, dtype=np.uint8)
        for p in range(TILE * TILE):
            luma[p] = _u8(
                np.float32(16.0) + yr * buf[_TILE_R + p] + yg * buf[_TILE_G + p] + yb * buf[_TILE_B + p]
            )
        rows = min(TILE, height - y0)
        for h in range(2):
            cols = min(HALF, width - x0 - h * HALF)
            if cols <= 0:
                continue
            for r in range(rows):
                for c in range(cols):
                    out_y[y0 + r, x0 + h * HALF + c] = luma[h * TILE * HALF + r * HALF + c]
            # chroma of each 2×2 block from the mean of its 4 levels (integers: the sum is exact in any order)
            for a in range(rows // 2):
                for bq in range(cols // 2):
                    i = h * TILE * HALF + 2 * a * HALF + 2 * bq
                    mr = _block_sum(buf, _TILE_R + i) * quarter
                    mg = _block_sum(buf, _TILE_G + i) * quarter
                    mb = _block_sum(buf, _TILE_B + i) * quarter
                    bi = y0 // 2 + a
                    bj = x0 // 2 + h * (HALF // 2) + bq
                    out_u[bi, bj] = _u8(np.float32(128.0) + ur * mr + ug * mg + ub * mb)
                    out_v[bi, bj] = _u8(np.float32(128.0) + vr * mr + vg * mg + vb * mb)


def tile_backdrop(
    camera: Camera, background: np.ndarray, plate: tuple[np.ndarray, np.ndarray] | None
) -> np.ndarray:
    """What shows through, per tile in the tile pixel layout (see HALF): float32 [T, 3, TILE·TILE] for a
    plate (pixels past the image's edge 0), [1, 3, TILE·TILE] for one background colour."""
    bg_rgb, _ = _backdrop(camera, background, plate)
    if plate is None:
        return np.ascontiguousarray(np.broadcast_to(bg_rgb.reshape(1, 3, 1), (1, 3, TILE * TILE)))
    tiles_x = (camera.width + TILE - 1) // TILE
    tiles_y = (camera.height + TILE - 1) // TILE
    padded = np.zeros((tiles_y * TILE, tiles_x * TILE, 3), dtype=np.float32)
    padded[: camera.height, : camera.width] = bg_rgb
    tiles = padded.reshape(tiles_y, TILE, tiles_x, TILE // HALF, HALF, 3).transpose(0, 2, 5, 3, 1, 4)
    return np.ascontiguousarray(tiles.reshape(tiles_y * tiles_x, 3, TILE * TILE))


@numba.njit(cache=True, nogil=True, inline="always")
def _level(value: float) -> np.float32:
    """A colour in [0, 1] as the 8-bit level :func:`_store` writes, as float32."""
    q = math.floor(value * 255.0 + 0.5)
    return np.float32(min(max(q, 0), 255))


@numba.njit(cache=True, nogil=True, inline="always")
def _store(out_rgb: np.ndarray, i: int, j: int, ch: int, value: float) -> None:
    q = math.floor(value * 255.0 + 0.5)  # an integer in numba
    out_rgb[i, j, ch] = np.uint8(min(max(q, 0), 255))


@numba.njit(cache=True, nogil=True)
def _depth_order_into(depth: np.ndarray, order: np.ndarray, spare: np.ndarray) -> np.ndarray:
    """Stable ascending order (ties keep index order); culled (+inf) last.

    An LSD radix sort over the float32 bit patterns, three passes of 11 bits:
    every depth here is positive or +inf (preprocess culls z < 0.01), and the
    bit patterns of such floats sort like the floats. Each pass is stable, so
    the result is exactly ``np.argsort(depth, kind="stable")``, about five
    times faster at the ~25k Gaussians of a head. ``order`` and ``spare`` (int64 [N]) are its scratch;
    the result is one of them.
    """
    n = depth.shape[0]
    keys = depth.view(np.uint32)
    # a digit's counts do not depend on the order the keys are in: all three histograms in one
    # sequential pass over the keys (not one gather through the previous pass's order each)
    counts = np.zeros((3, 2048), dtype=np.int64)
    for r in range(n):
        key = keys[r]
        counts[0, key & 2047] += 1
        counts[1, (key >> 11) & 2047] += 1
        counts[2, (key >> 22) & 2047] += 1
    for p in range(3):  # counts → each bucket's first slot
        total = 0
        for b in range(2048):
            c = counts[p, b]
            counts[p, b] = total
            total += c
    for r in range(n):  # the first pass scatters the indices themselves
        b = keys[r] & 2047
        spare[counts[0, b]] = r
        counts[0, b] += 1
    order, spare = spare, order
    for p in range(1, 3):
        shift = 11 * p
        for r in range(n):
            k = order[r]
            b = (keys[k] >> shift) & 2047
            spare[counts[p, b]] = k
            counts[p, b] += 1
        order, spare = spare, order
    return order


@dataclass
class _TileLists:
    """One frame's Gaussians, projected and binned to tiles (what the composite kernels take)."""

    starts: np.ndarray  # [T + 1] int64
    ids: np.ndarray  # [E] int32, per tile in depth order
    feat: np.ndarray  # [N, 6] float32: u, v, conic a, b, c, opacity
    rect: np.ndarray  # [N, 4] int32 pixel boxes
    colors: np.ndarray  # [N, 3] float32
    tiles_x: int


class _Workspace:
    """One thread's buffers for the per-frame projection and binning, reused frame after frame.

    A 512 px frame of a head needs ~2.5 MB of them (feat, rect, depth, the sort's two index arrays, the
    tile ranges, the tile lists). Freshly allocated per frame, each is over the server's fixed glibc
    mmap threshold (256 kB, :func:`realtime.web.memory.tune_allocator`), so every frame mapped and
    page-faulted them in again: ~500 minor faults and ~1 ms of kernel CPU per frame on the render
    worker (plus the cold pages' cache misses).
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: type[np.generic]) -> np.ndarray:
        """A C-contiguous array of ``shape`` (contents undefined), valid until ``take(name)`` again."""
        size = math.prod(shape)
        buf = self._arrays.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            # a buffer that grows again gets a little room to spare (the tile lists' length changes from
            # frame to frame); a first one is exact (a one-off workspace: project_and_bin without one)
            buf = np.empty(size if buf is None else size + size // 8, dtype=dtype)
            self._arrays[name] = buf
        return buf[:size].reshape(shape)


_workspaces = threading.local()


def thread_workspace() -> _Workspace:
    """This thread's reusable buffers (a render worker's projection, sort and binning scratch; posed
    Gaussians for :class:`engines.splat.render.Renderer`): valid until the thread's next frame."""
    work: _Workspace | None = getattr(_workspaces, "work", None)
    if work is None:
        work = _workspaces.work = _Workspace()
    return work


def project_and_bin(
    means: np.ndarray,  # [N, 3]
    quats: np.ndarray,  # [N, 4]
    scales: np.ndarray,  # [N, 3]
    opacities: np.ndarray,  # [N] (0 culls a Gaussian)
    camera: Camera,
    work: _Workspace | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """One frame's Gaussians projected, depth-sorted and binned to ``TILE``² tiles, exactly as the
    composite kernels take them: ``(feat [N, 6], rect [N, 4], starts [T + 1], ids [E], tiles_x)``.
    The replica builder's colour fit (:mod:`engines.create.color_fit`) bins with it too, so that it draws
    what this rasteriser draws. With ``work`` the arrays are its buffers (valid until its next frame),
    else new ones."""
    n = means.shape[0]
    work = work or _Workspace()
    feat = work.take("feat", (n, 6), np.float32)
    rect = work.take("rect", (n, 4), np.int32)
    depth = work.take("depth", (n,), np.float32)
    _preprocess(
        np.ascontiguousarray(means),
        np.ascontiguousarray(quats),
        np.ascontiguousarray(scales),
        np.ascontiguousarray(opacities),
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
    order = _depth_order_into(depth, work.take("order", (n,), np.int64), work.take("spare", (n,), np.int64))
    tiles_x = (camera.width + TILE - 1) // TILE
    tiles_y = (camera.height + TILE - 1) // TILE
    span = work.take("span", (n, 4), np.int32)
    starts, visible = _bin_count(order, rect, tiles_x, tiles_y, span)
    entries = int(starts[-1])
    ids = work.take("ids", (entries + 1,), np.int32)  # + _bin_fill's spare slot
    _bin_fill(order, span, visible, starts, tiles_x, ids)
    return feat, rect, starts, ids[:entries], tiles_x


def _tile_lists(g: PosedGaussians, f: int, camera: Camera) -> _TileLists:
    """Project, sort and bin frame ``f`` of ``g``, in this thread's workspace (valid until the thread's
    next frame)."""
    feat, rect, starts, ids, tiles_x = project_and_bin(
        g.means[f], g.quats[f], g.scales[f], g.opacities[f], camera, thread_workspace()
    )
    return _TileLists(starts, ids, feat, rect, np.ascontiguousarray(g.colors[f]), tiles_x)


@contextmanager
def _small_chunks() -> Iterator[None]:
    """Tiles differ a lot in cost (face vs background): hand them out in small chunks rather than one
    contiguous half of the image per thread. Only for the composite: the per-Gaussian loop of
    _preprocess with chunks of 2 cost 4-5x its time in scheduling."""
    previous = numba.set_parallel_chunksize(2)
    try:
        yield
    finally:
        numba.set_parallel_chunksize(previous)


def _backdrop(
    camera: Camera, background: np.ndarray, plate: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(rgb float32 [H, W, 3] or [1, 1, 3], transmittance [H, W] or [1, 1]): what shows through."""
    if plate is None:
        return np.ascontiguousarray(background, dtype=np.float32).reshape(1, 1, 3), np.ones(
            (1, 1), dtype=np.float32
        )
    bg_rgb = np.ascontiguousarray(plate[0], dtype=np.float32)
    bg_trans = np.ascontiguousarray(plate[1], dtype=np.float32)
    if bg_rgb.shape != (camera.height, camera.width, 3) or bg_trans.shape != (camera.height, camera.width):
        raise ValueError(
            f"plate must be [{camera.height}, {camera.width}, 3] and [{camera.height}, {camera.width}]"
        )
    return bg_rgb, bg_trans


def rasterize_cpu(
    g: PosedGaussians,
    camera: Camera,
    background: np.ndarray,  # [3] float in [0, 1]
    plate: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw every frame of ``g``: rgb uint8 [B, H, W, 3] and alpha float32 [B, H, W].

    Frames are drawn one after another, each parallel over its tiles.
    Inputs are assumed checked (see :func:`engines.splat.rasterize.rasterize`).

    ``plate`` = (rgb float32 [H, W, 3], transmittance float32 [H, W]) replaces
    the background colour by a picture of Gaussians that all lie behind those
    of ``g`` (premultiplied: the plate's rgb already holds the background
    colour seen through it); see :class:`engines.splat.render.Renderer`.
    """
    b = g.batch
    rgb = np.empty((b, camera.height, camera.width, 3), dtype=np.uint8)
    alpha = np.empty((b, camera.height, camera.width), dtype=np.float32)
    bg_rgb, bg_trans = _backdrop(camera, background, plate)
    for f in range(b):
        t = _tile_lists(g, f, camera)
        with _small_chunks():
            _composite(
                t.starts,
                t.ids,
                t.feat,
                t.rect,
                t.colors,
                bg_rgb,
                bg_trans,
                t.tiles_x,
                rgb[f],
                alpha[f],
                BLEND_PAIRS,
            )
    return rgb, alpha


def rasterize_cpu_i420(
    g: PosedGaussians,
    camera: Camera,
    background: np.ndarray,  # [3] float in [0, 1]
    plate: tuple[np.ndarray, np.ndarray] | None = None,
    backdrop_i420: np.ndarray | None = None,  # [H·3/2, W] uint8: plate_i420(camera, background, plate)
    backdrop_tiles: np.ndarray | None = None,  # tile_backdrop(camera, background, plate)
) -> np.ndarray:
    """:func:`rasterize_cpu` straight to I420: uint8 [B, H·3/2, W] (see :mod:`engines.splat.yuv`).

    The picture is the one :func:`rasterize_cpu` draws, converted as
    :func:`engines.splat.yuv.rgb_to_i420_reference` converts it (within one
    step: float32), without the RGB image, the alpha or a second pass over
    the frame. H and W must be even. ``backdrop_i420`` (from
    :func:`backdrop_i420`, cached by the caller) lets tiles that no Gaussian
    touches be copied rather than converted; ``backdrop_tiles`` (from
    :func:`tile_backdrop`, cached by the caller) spares re-laying the plate out
    per frame.
    """
    h, w = camera.height, camera.width
    out = np.empty((g.batch, *i420_shape(h, w)), dtype=np.uint8)
    rasterize_cpu_i420_into(
        g,
        camera,
        background,
        [i420_planes(out[f], h, w) for f in range(g.batch)],
        plate,
        backdrop_i420,
        backdrop_tiles,
    )
    return out


def rasterize_cpu_i420_into(
    g: PosedGaussians,
    camera: Camera,
    background: np.ndarray,  # [3] float in [0, 1]
    planes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],  # per frame: Y [H, W], U, V [H/2, W/2]
    plate: tuple[np.ndarray, np.ndarray] | None = None,
    backdrop_i420: np.ndarray | None = None,
    backdrop_tiles: np.ndarray | None = None,
) -> None:
    """:func:`rasterize_cpu_i420` writing frame ``f`` into ``planes[f]`` (uint8, C-contiguous: e.g. a
    video frame's own planes, so the picture needs no copy afterwards). Every pixel is written."""
    h, w = camera.height, camera.width
    bg_tiles = tile_backdrop(camera, background, plate) if backdrop_tiles is None else backdrop_tiles
    if backdrop_i420 is None:
        bg_planes = (np.zeros((0, 0), np.uint8),) * 3
    else:
        bg_planes = i420_planes(backdrop_i420, h, w)
    for f in range(g.batch):
        t = _tile_lists(g, f, camera)
        if backdrop_i420 is not None:
            for out_plane, bg_plane in zip(planes[f], bg_planes, strict=True):
                out_plane[...] = bg_plane  # tiles no Gaussian touches keep these pixels (see _composite_i420)
        with _small_chunks():
            _composite_i420(
                t.starts,
                t.ids,
                t.feat,
                t.rect,
                t.colors,
                bg_tiles,
                *bg_planes,
                t.tiles_x,
                *planes[f],
                BLEND_PAIRS,
            )


def backdrop_i420(
    camera: Camera, background: np.ndarray, plate: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """The backdrop alone (background colour or plate) in I420 [H·3/2, W], as the I420 composite draws it."""
    g = PosedGaussians(
        means=np.zeros((1, 0, 3), np.float32),
        quats=np.zeros((1, 0, 4), np.float32),
        scales=np.zeros((1, 0, 3), np.float32),
        opacities=np.zeros((1, 0), np.float32),
        colors=np.zeros((1, 0, 3), np.float32),
    )
    return rasterize_cpu_i420(g, camera, background, plate)[0]


def set_frame_threads(threads: int) -> int:
    """Threads the calling thread's renders use from now on (numba's count is per calling thread);
    returns the count applied (at most the pool numba started with)."""
    applied = max(1, min(int(threads), int(numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    numba.set_num_threads(applied)
    return applied


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
    rasterize_cpu_i420(g, cam, np.zeros(3, dtype=np.float32))
    elapsed = time.perf_counter() - start
    logger.info("raster_cpu: warm-up took %.2f s on %d numba threads", elapsed, numba.get_num_threads())
    return elapsed
