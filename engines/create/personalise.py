"""Person-specific expression deltas: the procedural rig corrected by tracked frames.

Given the landmark-delta basis of an avatar (:mod:`engines.create.reenact`),
the expression coefficients fitted on each tracked frame and the landmark
displacements those frames show, the projected landmark deltas ``P`` of each
channel are re-estimated per landmark by ridge regression towards the
procedural rig's deltas ``P0`` (the prior):

    P_j = argmin Σ_k ‖P_jᵀ c_k − d_kj‖² + μ_c ‖P_j − P0_j‖²,    μ_c = max(μ0, κ Σ_k c_kc²)

so a channel the clip exercises a lot follows the person, one it never shows
keeps the procedural shape. The per-landmark change is lifted back to camera
space at the landmark's depth and spread over the head's Gaussians by
normalised Gaussian kernels in the image (upper-lip Gaussians only from
upper-lip landmarks and lower from lower, so the lips never smear across the
mouth line), fading out away from the landmarks. Coefficients are then fitted
again with the new basis; a couple of rounds settle.
"""

from __future__ import annotations

import logging

import numpy as np

from engines.create.photo import FaceGeometry
from engines.create.reenact import _LOWER_LIP, _UPPER_LIP, Drive, LandmarkBasis
from engines.splat.avatar import LAYER_HEAD, Avatar, Rig

logger = logging.getLogger(__name__)

KAPPA = 0.3  # prior weight relative to the evidence Σ c² of a channel
MU0 = 1.0  # prior weight of a channel the clip hardly shows (pixels² per unit²)
KERNEL_FACE_FRACTION = 0.05  # kernel σ as a fraction of the face width in pixels


def refit_projected_deltas(
    basis: LandmarkBasis,
    geo: FaceGeometry,
    drive: Drive,
    targets_px: np.ndarray,  # [K, 478, 2] where the rig puts each landmark with no expression (posed)
) -> tuple[np.ndarray, np.ndarray]:
    """(P0, P): projected landmark deltas [C', L, 2] of the procedural rig and the corrected ones."""
    cam = geo.camera
    sel = basis.landmarks
    z = geo.pts3[sel, 2]
    # first-order projection at the neutral (head angles are small): Δu = fx Δx / z (the z part is tiny)
    p0 = np.stack([cam.fx * basis.deltas[..., 0] / z, cam.fy * basis.deltas[..., 1] / z], axis=-1)
    coef = drive.params[:, basis.columns].astype(np.float64)  # [K, C']
    disp = drive.landmarks_px[:, sel].astype(np.float64) - targets_px[:, sel]  # [K, L, 2]
    ctc = coef.T @ coef  # [C', C']
    mu = np.maximum(MU0, KAPPA * np.diag(ctc))
    lhs = ctc + np.diag(mu)
    rhs = np.einsum("kc,kld->cld", coef, disp) + mu[:, None, None] * p0  # [C', L, 2]
    p = np.linalg.solve(lhs, rhs.reshape(len(mu), -1)).reshape(p0.shape)
    return p0, p


def spread(
    avatar: Avatar,
    geo: FaceGeometry,
    basis: LandmarkBasis,
    change_px: np.ndarray,  # [C', L, 2] change of the projected landmark deltas
) -> Avatar:
    """The avatar with the landmark changes spread over its head Gaussians as extra rig deltas."""
    cam = avatar.camera
    sel = basis.landmarks
    lm_uv = geo.lm[sel, :2]
    z = geo.pts3[sel, 2]
    means = avatar.means.astype(np.float64)
    head = np.flatnonzero(avatar.layers == LAYER_HEAD)
    uv = np.stack(
        [
            cam.fx * means[head, 0] / means[head, 2] + cam.cx,
            cam.fy * means[head, 1] / means[head, 2] + cam.cy,
        ],
        1,
    )
    face_px = float(np.linalg.norm(geo.lm[234, :2] - geo.lm[454, :2]))
    s = KERNEL_FACE_FRACTION * face_px
    m = geo.feats.mouth
    loc = m.local(means[head])
    lower_g = loc[:, 1] > 0.5 * (m.up(loc[:, 0]) + m.lo(loc[:, 0]))
    near_mouth_g = (np.abs(loc[:, 0]) < 1.6) & (loc[:, 1] > -1.5) & (loc[:, 1] < 2.5)
    side_l = np.array([1 if j in _LOWER_LIP else (-1 if j in _UPPER_LIP else 0) for j in sel.tolist()])
    d2 = ((uv[:, None, :] - lm_uv[None]) ** 2).sum(-1)  # [G, L]
    k = np.exp(-0.5 * d2 / s**2)
    # the mouth line separates the lips: a Gaussian takes no correction from the other lip
    wrong = (lower_g[:, None] & (side_l[None] < 0)) | (~lower_g[:, None] & (side_l[None] > 0))
    k[wrong & near_mouth_g[:, None]] = 0.0
    total = k.sum(axis=1)
    fade = np.clip(total / 0.5, 0.0, 1.0)
    w = k / np.maximum(total, 1e-12)[:, None] * fade[:, None]  # [G, L]
    keep = fade > 1e-3
    g_idx = head[keep]
    w = w[keep]
    # lift the pixel change to camera space at the landmark's depth
    lifted = np.zeros((*change_px.shape[:2], 3))
    lifted[..., 0] = change_px[..., 0] * z / cam.fx
    lifted[..., 1] = change_px[..., 1] * z / cam.fy
    add = np.einsum("gl,clk->cgk", w, lifted)  # [C', G, 3]
    extra = {int(c): (g_idx, add[a]) for a, c in enumerate(basis.columns.tolist())}
    return with_extra_deltas(avatar, extra)


def with_extra_deltas(avatar: Avatar, extra: dict[int, tuple[np.ndarray, np.ndarray]]) -> Avatar:
    """The avatar with ``extra[c] = (gaussian index [K], delta [K, 3])`` added to channel c's deltas."""
    r = avatar.rig
    c_n = len(avatar.channels)
    offsets = [0]
    idx_parts: list[np.ndarray] = []
    delta_parts: list[np.ndarray] = []
    for c in range(c_n):
        idx, d = r.channel_deltas(c)
        if c in extra:
            ei, ed = extra[c]
            all_i = np.concatenate([idx.astype(np.int64), ei.astype(np.int64)])
            all_d = np.concatenate([d.astype(np.float64), ed.astype(np.float64)])
            uniq, inv = np.unique(all_i, return_inverse=True)
            merged = np.zeros((uniq.size, 3))
            np.add.at(merged, inv, all_d)
            big = np.linalg.norm(merged, axis=1) > 1e-7
            idx, d = uniq[big].astype(np.int32), merged[big].astype(np.float32)
        idx_parts.append(idx.astype(np.int32))
        delta_parts.append(d.astype(np.float32))
        offsets.append(offsets[-1] + len(idx))
    rig = Rig(
        delta_offsets=np.asarray(offsets, np.int64),
        delta_index=np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int32),
        delta_means=np.concatenate(delta_parts) if delta_parts else np.zeros((0, 3), np.float32),
        head_pivot=r.head_pivot,
        jaw_pivot=r.jaw_pivot,
        jaw_axis=r.jaw_axis,
        jaw_angle=r.jaw_angle,
        jaw_translation=r.jaw_translation,
    )
    out = Avatar(
        means=avatar.means,
        quats=avatar.quats,
        scales=avatar.scales,
        opacities=avatar.opacities,
        colors=avatar.colors,
        layers=avatar.layers,
        rig=rig,
        channels=avatar.channels,
        camera=avatar.camera,
        background=avatar.background,
        metadata=avatar.metadata,
        lods=avatar.lods,
    )
    out.validate()
    return out
