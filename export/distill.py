"""Distillation: levels of detail (LOD) of an avatar for the scheduler's degradation ladder.

Each level keeps a fraction (the *budget*) of the Gaussians. It is built by
pruning and merging, so that fewer, larger splats cover what many small ones
did:

1. **importance** of each Gaussian = opacity × its projected area in pixels at
   the avatar's camera (what it can contribute to a frame);
2. **prune** the Gaussians whose importance is negligible (below 5 % of the
   median), lowest first, up to a third of the Gaussians to remove;
3. **merge** neighbours in rounds until the budget is met: candidate pairs
   are each cluster's nearest neighbours (k-d tree on cluster centroids) in
   the same layer whose rig motion agrees (their position deltas per channel
   differ by less than half their size, so a merged splat still moves like
   its members); the cheapest pairs (small mass, close relative to their
   size) merge first, disjointly, each round. A merged cluster keeps the
   mean and rotation of its heaviest member (the rig poses means and
   rotations by index, so a level can only choose a subset of them), and
   gets moment-matched appearance: the mass-weighted second moment of its
   members about that mean, read along the member's axes, gives the scales;
   colour is the mass-weighted mean; opacity keeps the total mass
   (opacity × area) over the new area, but no less than the most opaque
   member's (merged surfaces stay closed). Because the kept mean is off the
   cluster's centre, the moment-matched spread is averaged with the kept
   splat grown to the cluster's area;
4. **refit colours**: rendering is linear in the colours, so a few rounds of
   "colour += ½ × residual at the splat's centre" against the full avatar's
   render of the rest pose recover most of the detail lost by merging.

A level is a :class:`engines.splat.avatar.LodLevel` (index, scales, opacities,
colours); ``avatar.lods[k - 1]`` is drawn by ``render(..., lod=k)``. LOD 0 is
the full set and is not stored. :func:`lod_psnr` measures each level
against the full avatar over the preview poses.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engines.splat.avatar import Avatar, LodLevel
from engines.splat.raster_reference import project_covariances, quat_to_rotmat
from engines.splat.rasterize import RenderBackend
from engines.splat.render import render

logger = logging.getLogger(__name__)

PRUNE_FRACTION_OF_MEDIAN = 0.05  # "negligible" importance
PRUNE_SHARE = 1.0 / 3.0  # at most this share of the removals is done by pruning
NEIGHBOURS = 6
RIG_TOLERANCE = 0.5  # allowed rig-motion difference, in units of the pair's larger scale
REFIT_ITERS = 8  # colour refit rounds per level (one render each)
REFIT_RATE = 0.5


class DistillError(ValueError):
    """Bad budgets or an avatar that cannot be distilled."""


@dataclass(frozen=True)
class LodReport:
    """One row of the distillation table."""

    lod: int  # 0 = full set
    budget: float
    gaussians: int
    psnr_db: float  # over the whole frame, all preview poses
    psnr_face_db: float  # over a square around the head


def parse_budgets(text: str | Sequence[float]) -> list[float]:
    """'1.0,0.5,0.25' → [0.5, 0.25] (descending, without the full level 1.0, which is LOD 0)."""
    items = [v for v in text.split(",") if v.strip()] if isinstance(text, str) else list(text)
    try:
        values = [float(v) for v in items]
    except ValueError as exc:
        raise DistillError(f"budgets must be numbers like 1.0,0.5,0.25: {exc}") from exc
    if not values:
        raise DistillError("give at least one budget, e.g. 1.0,0.5,0.25")
    for v in values:
        if not (0.0 < v <= 1.0) or not math.isfinite(v):
            raise DistillError(f"budgets must be in (0, 1], got {v}")
    return sorted({v for v in values if v < 1.0}, reverse=True)


def importance(avatar: Avatar) -> np.ndarray:
    """float64 [N]: opacity × projected 1σ-ellipse area in pixels at the avatar's camera (neutral pose)."""
    _, cov2 = project_covariances(
        avatar.means.astype(np.float64),
        avatar.quats.astype(np.float64),
        avatar.scales.astype(np.float64),
        avatar.camera,
    )
    area = math.pi * np.sqrt(np.clip(np.linalg.det(cov2), 0.0, None))
    visible = avatar.means[:, 2] >= 0.01
    return np.where(visible, avatar.opacities * area, 0.0)


def _rig_signature(avatar: Avatar) -> np.ndarray:
    """float32 [N, C·3]: every Gaussian's position delta per rig channel (zeros where it has none)."""
    rig = avatar.rig
    c = len(avatar.channels)
    sig = np.zeros((avatar.count, c * 3), dtype=np.float32)
    for ch in range(c):
        idx, delta = rig.channel_deltas(ch)
        if idx.size:
            sig[idx, 3 * ch : 3 * ch + 3] = delta
    # the rigid jaw moves the jaw layer as a whole; layers are never mixed, so that is covered
    return sig


def build_level(avatar: Avatar, target: int) -> LodLevel:
    """One level with ``target`` Gaussians (see the module docstring)."""
    try:
        from scipy.spatial import cKDTree
    except ImportError as exc:
        raise DistillError(
            "distillation needs scipy: pip install 'splatcast[train]' (or pip install scipy)"
        ) from exc

    n = avatar.count
    if not 1 <= target <= n:
        raise DistillError(f"a level needs 1..{n} Gaussians, got {target}")
    means = avatar.means.astype(np.float64)
    rot = quat_to_rotmat(avatar.quats.astype(np.float64))  # [N, 3, 3]
    var = avatar.scales.astype(np.float64) ** 2
    cov = rot @ (var[:, :, None] * np.swapaxes(rot, 1, 2))  # [N, 3, 3]
    s_sorted = np.sort(avatar.scales.astype(np.float64), axis=1)
    area = math.pi * s_sorted[:, 1] * s_sorted[:, 2]  # the splat's face (two largest axes)
    mass = avatar.opacities.astype(np.float64) * area + 1e-30
    imp = importance(avatar)
    sig = _rig_signature(avatar)
    size = s_sorted[:, 2]

    # cluster state, indexed by cluster id (initially one per Gaussian)
    alive = np.ones(n, dtype=bool)
    rep = np.arange(n)
    w = mass.copy()
    s1 = mass[:, None] * means
    s2 = mass[:, None, None] * (cov + means[:, :, None] * means[:, None, :])
    col = mass[:, None] * avatar.colors.astype(np.float64)
    extent = size.copy()  # rough radius of the cluster
    o_max = avatar.opacities.astype(np.float64).copy()  # most opaque member
    count = np.ones(n)  # members per cluster

    # 1. prune negligible Gaussians
    to_remove = n - target
    threshold = PRUNE_FRACTION_OF_MEDIAN * float(np.median(imp[imp > 0])) if np.any(imp > 0) else 0.0
    negligible = np.flatnonzero(imp <= threshold)
    negligible = negligible[np.argsort(imp[negligible], kind="stable")][: int(to_remove * PRUNE_SHARE)]
    alive[negligible] = False

    # 2. merge in rounds
    while alive.sum() > target:
        ids = np.flatnonzero(alive)
        excess = ids.size - target
        centroid = s1[ids] / w[ids, None]
        k = min(NEIGHBOURS + 1, ids.size)
        _, nb = cKDTree(centroid).query(centroid, k=k)
        a = np.repeat(np.arange(ids.size), k - 1)
        b = nb[:, 1:].reshape(-1)
        keep = a < b
        a, b = a[keep], b[keep]
        ca, cb = ids[a], ids[b]
        ra, rb = rep[ca], rep[cb]
        ok = avatar.layers[ra] == avatar.layers[rb]
        motion = np.abs(sig[ra] - sig[rb]).max(axis=1)
        ok &= motion <= RIG_TOLERANCE * np.maximum(size[ra], size[rb])
        a, b, ca, cb = a[ok], b[ok], ca[ok], cb[ok]
        if a.size == 0:
            # nothing compatible to merge: drop the least important clusters
            order = ids[np.argsort(w[ids], kind="stable")]
            alive[order[:excess]] = False
            logger.warning("distill: no compatible neighbours left; pruned %d clusters instead", excess)
            break
        dist = np.linalg.norm(centroid[a] - centroid[b], axis=1)
        cost = np.minimum(w[ca], w[cb]) * (1.0 + (dist / (extent[ca] + extent[cb])) ** 2)
        order = np.argsort(cost, kind="stable")
        used = np.zeros(n, dtype=bool)
        merged = 0
        for p in order:
            x, y = ca[p], cb[p]
            if used[x] or used[y]:
                continue
            used[x] = used[y] = True
            keep_id, drop_id = (x, y) if w[x] >= w[y] else (y, x)  # the heavier one keeps its mean
            w[keep_id] += w[drop_id]
            s1[keep_id] += s1[drop_id]
            s2[keep_id] += s2[drop_id]
            col[keep_id] += col[drop_id]
            o_max[keep_id] = max(o_max[keep_id], o_max[drop_id])
            count[keep_id] += count[drop_id]
            extent[keep_id] = max(extent[keep_id], extent[drop_id]) + 0.5 * float(dist[p])
            alive[drop_id] = False
            merged += 1
            if merged >= excess:
                break

    # 3. appearance of every surviving cluster, about its representative's mean and axes
    ids = np.flatnonzero(alive)
    r = rep[ids]
    mu = means[r]  # [K, 3]
    m1 = s1[ids] / w[ids, None]
    second = s2[ids] / w[ids, None, None]
    cov_r = (
        second
        - m1[:, :, None] * mu[:, None, :]
        - mu[:, :, None] * m1[:, None, :]
        + mu[:, :, None] * mu[:, None, :]
    )
    axes = rot[r]  # columns are the local axes
    var_r = np.einsum("kia,kij,kja->ka", axes, cov_r, axes)
    # the moment about the kept mean over-reaches on the side of the absorbed members; average it with
    # the representative's own splat grown to the cluster's area (its two wider axes × √members)
    own = avatar.scales[r].astype(np.float64)
    wide = np.argsort(own, axis=1)[:, 1:]
    grown = own**2
    np.put_along_axis(grown, wide, np.take_along_axis(grown, wide, axis=1) * count[ids, None], axis=1)
    var_r = np.where(np.arange(3)[None, :] == np.argmin(own, axis=1)[:, None], var_r, 0.5 * (var_r + grown))
    scales = np.sqrt(np.clip(var_r, 1e-12, None))
    new_sorted = np.sort(scales, axis=1)
    new_area = math.pi * new_sorted[:, 1] * new_sorted[:, 2]
    # mass over the new area, but never more transparent than its most opaque member:
    # merged surfaces must stay closed (holes show what lies behind them)
    opac = np.clip(np.maximum(w[ids] / new_area, o_max[ids]), 1.0 / 255.0, 1.0)
    colors = np.clip(col[ids] / w[ids, None], 0.0, 1.0)
    order = np.argsort(r, kind="stable")
    return LodLevel(
        index=r[order].astype(np.int32),
        scales=scales[order].astype(np.float32),
        opacities=opac[order].astype(np.float32),
        colors=colors[order].astype(np.float32),
    )


def _bilinear(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample img [H, W, 3] at pixel-space points uv [K, 2] (pixel centres at +0.5) → [K, 3]."""
    h, w = img.shape[:2]
    x = np.clip(uv[:, 0] - 0.5, 0.0, w - 1.001)
    y = np.clip(uv[:, 1] - 0.5, 0.0, h - 1.001)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return (
        img[y0, x0] * (1 - fx) * (1 - fy)
        + img[y0, x0 + 1] * fx * (1 - fy)
        + img[y0 + 1, x0] * (1 - fx) * fy
        + img[y0 + 1, x0 + 1] * fx * fy
    )


def refit_colors(
    avatar: Avatar, level: LodLevel, iters: int = REFIT_ITERS, rate: float = REFIT_RATE
) -> float:
    """Correct the level's colours towards the full avatar's render of the rest pose; returns the PSNR in dB.

    Rendering is linear in the colours, so each round adds ``rate`` × the
    residual (full − level) at each visible Gaussian's projected centre, and
    the best round is kept.
    """
    from engines.splat.rasterize import rasterize
    from engines.splat.rig import pose

    cam = avatar.camera
    params = avatar.rest(1)
    full = (
        rasterize(pose(avatar, params), cam, avatar.background, backend="cpu")[0].astype(np.float64) / 255.0
    )
    trial = dataclasses.replace(avatar, lods=[level])
    m = avatar.means[level.index].astype(np.float64)
    front = m[:, 2] > 0.01
    uv = np.stack([cam.fx * m[:, 0] / m[:, 2] + cam.cx, cam.fy * m[:, 1] / m[:, 2] + cam.cy], axis=1)[front]
    best, best_colors = -1.0, level.colors.copy()
    for it in range(iters + 1):
        img = rasterize(pose(trial, params, lod=1), cam, avatar.background, backend="cpu")[0] / 255.0
        err = full - img
        psnr = 10.0 * math.log10(1.0 / max(float(np.mean(err**2)), 1e-12))
        if psnr > best:
            best, best_colors = psnr, level.colors.copy()
        if it == iters:
            break
        level.colors[front] = np.clip(level.colors[front] + rate * _bilinear(err, uv), 0.0, 1.0)
    level.colors[:] = best_colors
    return best


def evaluation_params(avatar: Avatar) -> list[tuple[str, np.ndarray]]:
    """(label, params [C]) of the poses levels are judged on: neutral, visemes aa/O/PP, blink, yaw ±15°, pitch ±10°."""
    from engines.splat.preview import PITCH_DEG, YAW_DEG, viseme_params

    rest = avatar.rest(1)[0]
    out: list[tuple[str, np.ndarray]] = [("neutral", avatar.neutral(1)[0])]
    for v in ("aa", "O", "PP"):
        out.append((v, viseme_params(avatar, v)[0]))
    blink = rest.copy()
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        if name in avatar.channels:
            blink[avatar.channel_index(name)] = 1.0
    out.append(("blink", blink))
    for name, deg in (
        ("headYaw", YAW_DEG),
        ("headYaw", -YAW_DEG),
        ("headPitch", PITCH_DEG),
        ("headPitch", -PITCH_DEG),
    ):
        p = rest.copy()
        if name in avatar.channels:
            p[avatar.channel_index(name)] = math.radians(deg)
        out.append((f"{name} {deg:+.0f}°", p))
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def lod_psnr(
    avatar: Avatar, size: tuple[int, int] | None = None, backend: RenderBackend = "cpu"
) -> list[tuple[float, float]]:
    """(PSNR whole frame, PSNR head square) in dB of every stored level against LOD 0, over the evaluation poses."""
    from engines.splat.preview import head_crop

    h, w = size or (avatar.camera.height, avatar.camera.width)
    params = np.stack([p for _, p in evaluation_params(avatar)]).astype(np.float32)
    full = render(avatar, params, (h, w), backend=backend)
    x0, y0, side = head_crop(avatar)
    sx, sy = w / avatar.camera.width, h / avatar.camera.height
    crop = (
        slice(None),
        slice(int(y0 * sy), int((y0 + side) * sy)),
        slice(int(x0 * sx), int((x0 + side) * sx)),
    )
    out = []
    for k in range(1, len(avatar.lods) + 1):
        img = render(avatar, params, (h, w), backend=backend, lod=k)
        out.append((_psnr(full, img), _psnr(full[crop], img[crop])))
    return out


def distill(
    avatar: Avatar,
    budgets: Sequence[float] | str = (1.0, 0.5, 0.25),
    size: tuple[int, int] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Avatar, list[LodReport]]:
    """A copy of ``avatar`` whose ``lods`` are the distilled levels, and the table of their quality.

    Existing levels are replaced. ``size`` is the render size for the PSNR
    (default: the camera's reference size).
    """
    levels = parse_budgets(budgets)
    n = avatar.count
    lods = []
    for budget in levels:
        target = max(1, round(budget * n))
        if progress:
            progress(f"level {budget:g}: {target} Gaussians")
        level = build_level(avatar, target)
        refit_colors(avatar, level)
        lods.append(level)
    out = dataclasses.replace(avatar, lods=lods, metadata=dict(avatar.metadata))
    if progress:
        progress("PSNR over the evaluation poses")
    quality = lod_psnr(out, size)
    table = [LodReport(0, 1.0, n, float("inf"), float("inf"))]
    for k, (budget, level, (p_all, p_face)) in enumerate(zip(levels, lods, quality, strict=True), start=1):
        table.append(LodReport(k, budget, int(level.index.shape[0]), p_all, p_face))
    out.metadata["lods"] = [
        {
            "lod": r.lod,
            "budget": r.budget,
            "gaussians": r.gaussians,
            "psnr_db": round(r.psnr_db, 2) if math.isfinite(r.psnr_db) else None,
        }
        for r in table[1:]
    ]
    for r in table[1:]:
        logger.info(
            "distill: LOD %d (%.0f %%) %d Gaussians, PSNR %.2f dB",
            r.lod,
            100 * r.budget,
            r.gaussians,
            r.psnr_db,
        )
    return out, table
