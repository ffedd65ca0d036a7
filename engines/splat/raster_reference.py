"""The reference splat rasteriser: plain numpy, float64, written to be read.

This module *is* the rasteriser semantics (contract item 2); the fast
backends (``raster_cpu`` with numba, ``raster_torch``) are tested against it.
It is slow (a Python loop over Gaussians) and meant for tests and small images.

Semantics, per frame:

1. Pixel (row i, col j) is sampled at (u, v) = (j + 0.5, i + 0.5).
2. A Gaussian with camera-space mean (x, y, z) projects to u = fx·x/z + cx,
   v = fy·y/z + cy; Gaussians with z < 0.01 are skipped.
3. Σ = R·diag(s²)·Rᵀ, J = [[fx/z, 0, -fx·x/z²], [0, fy/z, -fy·y/z²]],
   Σ2D = J Σ Jᵀ + 0.3·I.
4. It touches a pixel only where d = Δᵀ Σ2D⁻¹ Δ ≤ 9; there
   α = min(0.99, o·exp(-d/2)), and α < 1/255 is skipped.
5. Gaussians are composited front to back in ascending z of the mean
   (stable: ties keep index order): C += c·α·T; T *= 1 - α; a pixel stops
   once T < 1e-4.
6. rgb = C + T·background, alpha = 1 - T, uint8 = clip(round(255·rgb), 0, 255).
"""

from __future__ import annotations

import numpy as np

from engines.splat.types import Camera, PosedGaussians

NEAR_Z = 0.01  # Gaussians closer than this (or behind the camera) are skipped
MAX_MAHALANOBIS_SQ = 9.0  # 3σ ellipse
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_STOP = 1e-4  # a pixel stops once its transmittance falls below this
BLUR = 0.3  # added to the 2D covariance diagonal (anti-aliasing floor, pixels²)


def quat_to_rotmat(quats: np.ndarray) -> np.ndarray:
    """Rotation matrices from unit quaternions (w, x, y, z).

    quats: [..., 4] → [..., 3, 3]. The input is renormalised.
    """
    q = quats / np.linalg.norm(quats, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
        ],
        axis=-2,
    )


def project_covariances(
    means: np.ndarray,  # [N, 3] camera space
    quats: np.ndarray,  # [N, 4] (w, x, y, z)
    scales: np.ndarray,  # [N, 3] standard deviations
    camera: Camera,
) -> tuple[np.ndarray, np.ndarray]:
    """Projected centres [N, 2] (u, v) and 2D covariances [N, 2, 2] (with the blur floor).

    Only meaningful for z ≥ NEAR_Z; callers skip the rest.
    """
    x, y = means[:, 0], means[:, 1]
    z = np.maximum(means[:, 2], NEAR_Z)
    uv = np.stack([camera.fx * x / z + camera.cx, camera.fy * y / z + camera.cy], axis=-1)
    rot = quat_to_rotmat(quats)  # [N, 3, 3]
    cov3 = rot @ (scales[:, :, None] ** 2 * np.swapaxes(rot, -1, -2))  # R diag(s²) Rᵀ
    jac = np.zeros((means.shape[0], 2, 3))
    jac[:, 0, 0] = camera.fx / z
    jac[:, 0, 2] = -camera.fx * x / z**2
    jac[:, 1, 1] = camera.fy / z
    jac[:, 1, 2] = -camera.fy * y / z**2
    cov2 = jac @ cov3 @ np.swapaxes(jac, -1, -2) + BLUR * np.eye(2)
    return uv, cov2


def _draw_frame(
    means: np.ndarray,  # [N, 3]
    quats: np.ndarray,  # [N, 4]
    scales: np.ndarray,  # [N, 3]
    opacities: np.ndarray,  # [N]
    colors: np.ndarray,  # [N, 3]
    camera: Camera,
    background: np.ndarray,  # [3]
) -> tuple[np.ndarray, np.ndarray]:
    """One frame: rgb [H, W, 3] float64 (before quantisation) and alpha [H, W]."""
    h, w = camera.height, camera.width
    color_acc = np.zeros((h, w, 3))
    trans = np.ones((h, w))
    done = np.zeros((h, w), dtype=bool)

    uv, cov2 = project_covariances(means, quats, scales, camera)
    order = np.argsort(means[:, 2], kind="stable")
    for k in order:
        if means[k, 2] < NEAR_Z:
            continue
        # bounding box of the 3σ ellipse: |Δu| ≤ 3·sqrt(Σ2D[0, 0]), |Δv| ≤ 3·sqrt(Σ2D[1, 1])
        ru = np.sqrt(MAX_MAHALANOBIS_SQ * cov2[k, 0, 0])
        rv = np.sqrt(MAX_MAHALANOBIS_SQ * cov2[k, 1, 1])
        j0 = max(int(np.ceil(uv[k, 0] - ru - 0.5)), 0)
        j1 = min(int(np.floor(uv[k, 0] + ru - 0.5)), w - 1)
        i0 = max(int(np.ceil(uv[k, 1] - rv - 0.5)), 0)
        i1 = min(int(np.floor(uv[k, 1] + rv - 0.5)), h - 1)
        if j0 > j1 or i0 > i1:
            continue  # off-screen
        jj, ii = np.meshgrid(np.arange(j0, j1 + 1), np.arange(i0, i1 + 1))
        du = jj + 0.5 - uv[k, 0]
        dv = ii + 0.5 - uv[k, 1]
        inv = np.linalg.inv(cov2[k])
        d = inv[0, 0] * du * du + 2.0 * inv[0, 1] * du * dv + inv[1, 1] * dv * dv
        alpha = np.minimum(ALPHA_MAX, opacities[k] * np.exp(-0.5 * d))
        hit = (d <= MAX_MAHALANOBIS_SQ) & (alpha >= ALPHA_MIN) & ~done[i0 : i1 + 1, j0 : j1 + 1]
        alpha = np.where(hit, alpha, 0.0)
        t_patch = trans[i0 : i1 + 1, j0 : j1 + 1]
        color_acc[i0 : i1 + 1, j0 : j1 + 1] += colors[k] * (alpha * t_patch)[..., None]
        t_patch *= 1.0 - alpha
        done[i0 : i1 + 1, j0 : j1 + 1] |= t_patch < T_STOP

    rgb = color_acc + trans[..., None] * background
    return rgb, 1.0 - trans


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] float in [0, 1] → uint8 with round-half-to-even and clipping."""
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def rasterize_reference(
    g: PosedGaussians,
    camera: Camera,
    background: np.ndarray,  # [3] float in [0, 1]
) -> tuple[np.ndarray, np.ndarray]:
    """Draw every frame of ``g``: rgb uint8 [B, H, W, 3] and alpha float32 [B, H, W]."""
    b = g.batch
    rgb = np.zeros((b, camera.height, camera.width, 3), dtype=np.uint8)
    alpha = np.zeros((b, camera.height, camera.width), dtype=np.float32)
    bg = np.asarray(background, dtype=np.float64)
    for f in range(b):
        frame_rgb, frame_alpha = _draw_frame(
            g.means[f].astype(np.float64),
            g.quats[f].astype(np.float64),
            g.scales[f].astype(np.float64),
            g.opacities[f].astype(np.float64),
            g.colors[f].astype(np.float64),
            camera,
            bg,
        )
        rgb[f] = to_uint8(frame_rgb)
        alpha[f] = frame_alpha
    return rgb, alpha


def rasterize_reference_float(
    g: PosedGaussians,
    camera: Camera,
    background: np.ndarray,  # [3]
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`rasterize_reference` but rgb stays float64 [B, H, W, 3] (for tests and PSNR)."""
    frames = [
        _draw_frame(
            g.means[f].astype(np.float64),
            g.quats[f].astype(np.float64),
            g.scales[f].astype(np.float64),
            g.opacities[f].astype(np.float64),
            g.colors[f].astype(np.float64),
            camera,
            np.asarray(background, dtype=np.float64),
        )
        for f in range(g.batch)
    ]
    return np.stack([fr[0] for fr in frames]), np.stack([fr[1] for fr in frames])
