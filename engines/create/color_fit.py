"""Colours of an avatar's Gaussians by least squares over many frames (rendering is linear in them).

For posed Gaussians in frame f the splat image is ``I_f = A_f c + T_f · bg``:
every pixel is a sum of the Gaussians' colours weighted by ``w = α · T``
(opacity × Gaussian falloff × transmittance in front), and those weights do not
depend on the colours. :func:`fit_colors` solves

    min_c  Σ_f Σ_p m_fp ‖(A_f c + T_f bg − I_f)_p‖²  +  λ Σ_i d_i ‖c_i − c0_i‖²

by preconditioned conjugate gradients, where ``d`` is the row sum of
``AᵀMA`` (a Jacobi-like preconditioner that bounds the Hessian) and the prior
pulls Gaussians that the frames hardly show towards their starting colours.

The kernel :func:`render_and_backproject` mirrors the real-time rasteriser's
semantics exactly (its projection, binning and depth order are those of
:mod:`engines.splat.raster_cpu`; α = min(0.99, o·exp(−d/2)), skipped below
1/255, a pixel stops at T < 1e-4) and is parallel over 16×16 tiles, each
Gaussian visiting only the pixels of its box: each tile writes the
contribution of each of its (tile, Gaussian) entries into its own slot,
reduced per Gaussian afterwards, so no two threads write the same memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

from engines.splat.avatar import LAYER_STATIC, Avatar
from engines.splat.raster_cpu import _ALPHA_MAX, _ALPHA_MIN, _MAX_D, _T_STOP, TILE, project_and_bin
from engines.splat.rig import pose

logger = logging.getLogger(__name__)


@numba.njit(cache=True, nogil=True, inline="always", fastmath=True)
def _alpha(feat: np.ndarray, k: int, du: float, dv: float) -> float:
    """Gaussian ``k``'s opacity at offset (du, dv) from its centre, with the rasteriser's own cut-offs
    (0 where it draws nothing): the one evaluation both passes of :func:`_tiles` use."""
    d = feat[k, 2] * du * du + 2.0 * feat[k, 3] * du * dv + feat[k, 4] * dv * dv
    if d > _MAX_D:
        return 0.0
    a = min(feat[k, 5] * math.exp(-0.5 * d), _ALPHA_MAX)
    return a if a >= _ALPHA_MIN else 0.0


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=True)
def _tiles(
    starts: np.ndarray,  # [T + 1] int64
    ids: np.ndarray,  # [E] int32
    feat: np.ndarray,  # [N, 6] float32: u, v, conic a, b, c, opacity
    rect: np.ndarray,  # [N, 4] int32: j0, j1, i0, i1 pixel box of each Gaussian
    colors: np.ndarray,  # [N, 3] float32
    bg: np.ndarray,  # [H, W, 3] float32: what shows through (the static plate, premultiplied)
    target: np.ndarray,  # [H, W, 3] float32 (pred − target is back-projected)
    weight: np.ndarray,  # [H, W] float32 pixel weights (0 = ignore)
    tiles_x: int,
    pred: np.ndarray,  # [H, W, 3] float32 out
    grad_e: np.ndarray,  # [E, 3] float64 out: Σ_p m w (pred − target) per entry
    diag_e: np.ndarray,  # [E] float64 out: Σ_p m w · Σ_j w_j per entry
) -> None:
    """Per tile, Gaussian outer and pixel inner (only the pixels of its box), like the rasteriser:
    a forward pass composites front to back, then a second walk in the same order recomputes each
    pixel's transmittance and hands every entry its weight times the pixel's residual."""
    height, width = pred.shape[0], pred.shape[1]
    n_tiles = starts.shape[0] - 1
    for t in numba.prange(n_tiles):
        ty = t // tiles_x
        tx = t - ty * tiles_x
        x0 = tx * TILE
        y0 = ty * TILE
        x1 = min(x0 + TILE, width) - 1
        y1 = min(y0 + TILE, height) - 1
        e0, e1 = starts[t], starts[t + 1]
        tr = np.ones((TILE, TILE))
        acc = np.zeros((TILE, TILE, 3))
        for e in range(e0, e1):
            k = ids[e]
            for i in range(max(rect[k, 2], y0), min(rect[k, 3], y1) + 1):
                dv = i + 0.5 - feat[k, 1]
                for j in range(max(rect[k, 0], x0), min(rect[k, 1], x1) + 1):
                    li, lj = i - y0, j - x0
                    if tr[li, lj] < _T_STOP:
                        continue
                    a = _alpha(feat, k, j + 0.5 - feat[k, 0], dv)
                    if a == 0.0:
                        continue
                    w = a * tr[li, lj]
                    acc[li, lj, 0] += w * colors[k, 0]
                    acc[li, lj, 1] += w * colors[k, 1]
                    acc[li, lj, 2] += w * colors[k, 2]
                    tr[li, lj] *= 1.0 - a
        res = np.zeros((TILE, TILE, 3))
        total = np.zeros((TILE, TILE))
        live = False
        for i in range(y0, y1 + 1):
            for j in range(x0, x1 + 1):
                li, lj = i - y0, j - x0
                for c in range(3):
                    pred[i, j, c] = acc[li, lj, c] + tr[li, lj] * bg[i, j, c]
                m = weight[i, j]
                if m != 0.0:
                    live = True
                    for c in range(3):
                        res[li, lj, c] = m * (pred[i, j, c] - target[i, j, c])
                    total[li, lj] = m * (1.0 - tr[li, lj])
        if not live:
            continue
        tr[:, :] = 1.0
        for e in range(e0, e1):
            k = ids[e]
            gr = 0.0
            gg = 0.0
            gb = 0.0
            dg = 0.0
            for i in range(max(rect[k, 2], y0), min(rect[k, 3], y1) + 1):
                dv = i + 0.5 - feat[k, 1]
                for j in range(max(rect[k, 0], x0), min(rect[k, 1], x1) + 1):
                    li, lj = i - y0, j - x0
                    if tr[li, lj] < _T_STOP:
                        continue
                    a = _alpha(feat, k, j + 0.5 - feat[k, 0], dv)
                    if a == 0.0:
                        continue
                    w = a * tr[li, lj]
                    gr += w * res[li, lj, 0]
                    gg += w * res[li, lj, 1]
                    gb += w * res[li, lj, 2]
                    dg += w * total[li, lj]
                    tr[li, lj] *= 1.0 - a
            grad_e[e, 0] = gr
            grad_e[e, 1] = gg
            grad_e[e, 2] = gb
            diag_e[e] = dg


@dataclass
class FrameGeometry:
    """One frame's projected, binned Gaussians (independent of the colours, reused every iteration)."""

    feat: np.ndarray  # [N, 6] float32
    rect: np.ndarray  # [N, 4] int32
    starts: np.ndarray  # [T + 1] int64
    ids: np.ndarray  # [E] int32
    tiles_x: int


def frame_geometry(avatar: Avatar, params: np.ndarray, subset: np.ndarray | None = None) -> FrameGeometry:
    """Pose ``avatar`` by ``params`` [C] and project/bin it (only ``subset`` [N] bool, if given) like
    the real-time rasteriser does; Gaussians outside the subset are culled (never drawn)."""
    g = pose(avatar, np.asarray(params, np.float32).reshape(1, -1))
    opac = np.ascontiguousarray(g.opacities[0]).copy()
    if subset is not None:
        opac[~subset] = 0.0  # preprocess culls o = 0
    feat, rect, starts, ids, tiles_x = project_and_bin(
        g.means[0], g.quats[0], g.scales[0], opac, avatar.camera
    )
    return FrameGeometry(feat, rect, starts, ids, tiles_x)


def render_and_backproject(
    geo: FrameGeometry,
    colors: np.ndarray,  # [N, 3] float32
    bg: np.ndarray,  # [H, W, 3] float32, premultiplied picture behind the Gaussians
    target: np.ndarray,  # [H, W, 3] float32
    weight: np.ndarray,  # [H, W] float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pred [H, W, 3] float32, Aᵀ M (pred − target) [N, 3], row sums of AᵀMA [N]) for one frame."""
    n = colors.shape[0]
    pred = np.empty(target.shape, np.float32)
    e = geo.ids.shape[0]
    grad_e = np.zeros((e, 3))
    diag_e = np.zeros(e)
    _tiles(
        geo.starts,
        geo.ids,
        geo.feat,
        geo.rect,
        np.ascontiguousarray(colors, np.float32),
        np.ascontiguousarray(bg, np.float32),
        np.ascontiguousarray(target, np.float32),
        np.ascontiguousarray(weight, np.float32),
        geo.tiles_x,
        pred,
        grad_e,
        diag_e,
    )
    grad = np.zeros((n, 3))
    for c in range(3):
        grad[:, c] = np.bincount(geo.ids, weights=grad_e[:, c], minlength=n)
    diag = np.bincount(geo.ids, weights=diag_e, minlength=n)
    return pred, grad, diag


def static_plate(avatar: Avatar) -> tuple[np.ndarray, np.ndarray]:
    """(in_plate [N] bool, premultiplied picture [H, W, 3] float32) of the static Gaussians no channel
    moves (they lie behind everything else: :class:`engines.splat.render.Renderer` draws them the same way)."""
    from engines.splat.raster_cpu import rasterize_cpu
    from engines.splat.types import PosedGaussians

    moved = np.zeros(avatar.count, bool)
    moved[avatar.rig.delta_index] = True
    in_plate = (avatar.layers == LAYER_STATIC) & ~moved
    g = pose(avatar, avatar.neutral(1))
    sub = PosedGaussians(
        *(np.ascontiguousarray(a[:, in_plate]) for a in (g.means, g.quats, g.scales, g.opacities, g.colors))
    )
    rgb, _ = rasterize_cpu(sub, avatar.camera, np.asarray(avatar.background, np.float32))
    return in_plate, rgb[0].astype(np.float32) / 255.0


def fit_colors(
    avatar: Avatar,
    params: np.ndarray,  # [F, C] float32
    targets: np.ndarray,  # [F, H, W, 3] uint8, at the avatar camera's size
    weights: np.ndarray | None = None,  # [F, H, W] float32 pixel weights
    which: np.ndarray
    | None = None,  # [N] bool: Gaussians whose colour is solved (default: all but the plate)
    iters: int = 10,
    prior: float = 0.02,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Colours [N, 3] float32 minimising the squared error over the frames (see the module docstring).

    The static plate (static Gaussians no channel moves) is drawn once with its current colours and
    held fixed. Returns the colours (clipped to [0, 1]) and the weighted RMS error before and after."""
    f_n = len(params)
    cam = avatar.camera
    in_plate, plate = static_plate(avatar)
    front = ~in_plate
    geos = [frame_geometry(avatar, params[f], front) for f in range(f_n)]
    tg = [np.asarray(t, np.float32) / 255.0 for t in targets]
    wt = [
        np.ones((cam.height, cam.width), np.float32)
        if weights is None
        else np.asarray(weights[f], np.float32)
        for f in range(f_n)
    ]
    zeros = np.zeros((cam.height, cam.width, 3), np.float32)
    n = avatar.count
    which = front.copy() if which is None else (np.asarray(which, bool) & front)
    c0 = avatar.colors.astype(np.float64)
    # right-hand side and preconditioner: one pass at the current colours
    grad0 = np.zeros((n, 3))
    diag = np.zeros(n)
    err0 = 0.0
    den = 3.0 * sum(float(w.sum()) for w in wt)
    for f in range(f_n):
        pred, gr, dg = render_and_backproject(geos[f], c0.astype(np.float32), plate, tg[f], wt[f])
        grad0 += gr
        diag += dg
        err0 += float((wt[f][..., None] * (pred - tg[f]) ** 2).sum())
    reg = prior * max(float(np.median(diag[which & (diag > 0)])) if np.any(which & (diag > 0)) else 1.0, 1e-9)
    precond = 1.0 / (diag + reg)

    def hess(v: np.ndarray) -> np.ndarray:  # (AᵀMA + reg) v on the free Gaussians
        out = np.zeros((n, 3))
        vv = np.where(which[:, None], v, 0.0).astype(np.float32)
        for f in range(f_n):
            _, gr, _ = render_and_backproject(geos[f], vv, zeros, zeros, wt[f])
            out += gr
        out += reg * v
        out[~which] = 0.0
        return out

    # Newton step from c0 solved by PCG: (AᵀMA + reg) δ = −grad0 (the prior pulls δ to 0)
    r = -grad0
    r[~which] = 0.0
    x = np.zeros((n, 3))
    z = r * precond[:, None]
    p = z.copy()
    rz = float((r * z).sum())
    for it in range(iters):
        hp = hess(p)
        alpha = rz / max(float((p * hp).sum()), 1e-30)
        x += alpha * p
        r -= alpha * hp
        z = r * precond[:, None]
        rz_new = float((r * z).sum())
        p = z + (rz_new / max(rz, 1e-30)) * p
        rz = rz_new
        if progress:
            progress(it + 1, iters)
    colors = np.clip(c0 + x, 0.0, 1.0).astype(np.float32)
    err1 = 0.0
    for f in range(f_n):
        pred, _, _ = render_and_backproject(geos[f], colors, plate, tg[f], np.zeros_like(wt[f]))
        err1 += float((wt[f][..., None] * (pred - tg[f]) ** 2).sum())
    return colors, {
        "rms_before": math.sqrt(err0 / max(den, 1e-12)),
        "rms_after": math.sqrt(err1 / max(den, 1e-12)),
    }
