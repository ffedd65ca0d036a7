"""The torch splat rasteriser: vectorised, batch-friendly, device-agnostic.

Same semantics as :mod:`engines.splat.raster_reference` (contract item 2).
Runs on CUDA when a GPU is present and on the CPU otherwise; no Python loop
runs per Gaussian or per pixel. Steps, for the whole batch at once:

1. preprocess every (frame, Gaussian): projection, 2D covariance and conic,
   pixel bounding box of the reachable part of the 3σ ellipse, culling;
2. stable depth rank per frame;
3. bin: expand each Gaussian to the 16×16 tiles its box touches, one sort of
   the key (frame·tile, depth rank) gives every tile's list in depth order;
4. composite: a short Python loop over chunks of ``chunk`` list entries; each
   step is vectorised over (tile of any frame, 256 pixels, chunk entries).
   Transmittance inside a chunk is an exclusive cumulative product, which
   makes the per-pixel stop at T < 1e-4 exact (a Gaussian contributes iff the
   transmittance in front of it is still ≥ 1e-4). Tiles whose pixels have all
   stopped, or whose lists are exhausted, drop out of later steps.

torch is imported lazily: the real-time CPU path never needs it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.splat.types import Camera, PosedGaussians

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

TILE = 16
NEAR_Z = 0.01
MAX_D = 9.0
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_STOP = 1e-4
BLUR = 0.3


class TorchUnavailableError(ImportError):
    """The 'torch' render backend was asked for but PyTorch is not installed."""


def import_torch() -> Any:
    """Import torch or say how to get it."""
    try:
        import torch
    except ImportError as exc:
        raise TorchUnavailableError(
            "the 'torch' render backend needs PyTorch: install it (pip install torch, or "
            "pip install 'splatcast[train]'), or use backend='cpu'"
        ) from exc
    return torch


def default_device() -> str:
    """'cuda' when a GPU is visible to torch, else 'cpu'."""
    torch = import_torch()
    return "cuda" if torch.cuda.is_available() else "cpu"


def _quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """[..., 4] (w, x, y, z) → [..., 3, 3]; the input is renormalised."""
    torch = import_torch()
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def rasterize_tensors(
    means: torch.Tensor,  # [B, N, 3] float32, camera space
    quats: torch.Tensor,  # [B, N, 4] float32 (w, x, y, z)
    scales: torch.Tensor,  # [B, N, 3] float32
    opacities: torch.Tensor,  # [B, N] float32
    colors: torch.Tensor,  # [B, N, 3] float32
    camera: Camera,
    background: torch.Tensor,  # [3] float32
    chunk: int | None = None,
    max_elements: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw on the tensors' device: rgb uint8 [B, H, W, 3] and alpha float32 [B, H, W].

    ``chunk`` list entries are composited per step; ``max_elements`` bounds the
    (tiles × 256 × chunk) working set of one step (memory vs. launch count).
    Defaults: 128 entries and 2^26 elements on CUDA (few, large steps: kernel
    launches and the per-step sync dominate there), 32 and 2^24 on the CPU.
    """
    torch = import_torch()
    dev = means.device
    on_gpu = dev.type == "cuda"
    chunk = chunk or (128 if on_gpu else 32)
    max_elements = max_elements or (1 << 26 if on_gpu else 1 << 24)
    b, n = means.shape[0], means.shape[1]
    h, w = camera.height, camera.width
    tiles_x = (w + TILE - 1) // TILE
    tiles_y = (h + TILE - 1) // TILE
    n_tiles = tiles_x * tiles_y

    # 1. preprocess [B, N]
    x, y = means[..., 0], means[..., 1]
    z_raw = means[..., 2]
    z = z_raw.clamp_min(NEAR_Z)
    rot = _quat_to_rotmat(quats)  # [B, N, 3, 3]
    cov3 = rot @ (scales.square().unsqueeze(-1) * rot.transpose(-1, -2))
    jac = torch.zeros((b, n, 2, 3), dtype=means.dtype, device=dev)
    jac[..., 0, 0] = camera.fx / z
    jac[..., 0, 2] = -camera.fx * x / (z * z)
    jac[..., 1, 1] = camera.fy / z
    jac[..., 1, 2] = -camera.fy * y / (z * z)
    cov2 = jac @ cov3 @ jac.transpose(-1, -2)
    a2 = cov2[..., 0, 0] + BLUR
    b2 = cov2[..., 0, 1]
    c2 = cov2[..., 1, 1] + BLUR
    det = a2 * c2 - b2 * b2
    u = camera.fx * x / z + camera.cx
    v = camera.fy * y / z + camera.cy
    safe_det = torch.where(det > 0, det, torch.ones_like(det))
    conic = torch.stack([c2 / safe_det, -b2 / safe_det, a2 / safe_det], dim=-1)  # [B, N, 3]
    # only d ≤ min(9, 2 ln(255 o)) can give α ≥ 1/255 inside the 3σ ellipse
    dmax = torch.clamp(2.0 * torch.log(opacities.clamp_min(1e-30) * 255.0) + 1e-3, max=MAX_D)
    valid = (z_raw >= NEAR_Z) & (opacities > 0) & (det > 0) & (dmax > 0)
    dmax = dmax.clamp_min(0.0)
    ru = torch.sqrt(dmax * a2)
    rv = torch.sqrt(dmax * c2)
    j0 = torch.ceil(u - ru - 0.5).clamp(-1, w).long()
    j1 = torch.floor(u + ru - 0.5).clamp(-1, w).long()
    i0 = torch.ceil(v - rv - 0.5).clamp(-1, h).long()
    i1 = torch.floor(v + rv - 0.5).clamp(-1, h).long()
    valid &= (j1 >= 0) & (i1 >= 0) & (j0 <= w - 1) & (i0 <= h - 1) & (j0 <= j1) & (i0 <= i1)
    tx0 = j0.clamp(0, w - 1) // TILE
    tx1 = j1.clamp(0, w - 1) // TILE
    ty0 = i0.clamp(0, h - 1) // TILE
    ty1 = i1.clamp(0, h - 1) // TILE

    # 2. stable depth rank within each frame (culled ones last)
    depth_key = torch.where(valid, z_raw, torch.full_like(z_raw, float("inf")))
    order = torch.sort(depth_key, dim=1, stable=True).indices  # [B, N]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=dev).expand(b, n))

    # 3. bin (frame, Gaussian) pairs to tiles
    span_x = tx1 - tx0 + 1
    counts = torch.where(valid, span_x * (ty1 - ty0 + 1), torch.zeros_like(span_x)).reshape(-1)
    flat = torch.arange(b * n, device=dev)
    gid = torch.repeat_interleave(flat, counts)  # [E] flat (frame, Gaussian) index
    first = torch.cumsum(counts, 0) - counts
    within = torch.arange(gid.shape[0], device=dev) - first[gid]
    sx = span_x.reshape(-1)[gid]
    tile_x = tx0.reshape(-1)[gid] + within % sx
    tile_y = ty0.reshape(-1)[gid] + within // sx
    frame = gid // n
    tile = frame * n_tiles + tile_y * tiles_x + tile_x  # [E] global tile id over the batch
    key = tile * n + rank.reshape(-1)[gid]
    sorted_gid = gid[torch.sort(key).indices]
    tile_count = torch.bincount(tile, minlength=b * n_tiles)
    tile_start = torch.cumsum(tile_count, 0) - tile_count

    # per-Gaussian data gathered once, flattened over the batch
    params = torch.cat(
        [u.reshape(-1, 1), v.reshape(-1, 1), conic.reshape(-1, 3), opacities.reshape(-1, 1)], dim=1
    )  # [B·N, 6]
    color_flat = colors.reshape(-1, 3)

    # pixel centres of every tile: [B·T, 256]
    local = torch.arange(TILE * TILE, device=dev)
    tile_ids = torch.arange(b * n_tiles, device=dev)
    t_in_frame = tile_ids % n_tiles
    px = (t_in_frame % tiles_x * TILE).unsqueeze(1) + (local % TILE).unsqueeze(0)
    py = (t_in_frame // tiles_x * TILE).unsqueeze(1) + (local // TILE).unsqueeze(0)
    inside = (px < w) & (py < h)
    pxf = px.to(means.dtype) + 0.5
    pyf = py.to(means.dtype) + 0.5

    acc = torch.zeros((b * n_tiles, TILE * TILE, 3), dtype=means.dtype, device=dev)
    # pixels outside the image start finished, so edge tiles can finish too
    trans = torch.where(inside, 1.0, 0.0).to(means.dtype)

    # 4. composite, chunk by chunk of list entries
    max_count = int(tile_count.max().item()) if tile_count.numel() else 0
    steps = torch.arange(chunk, device=dev)
    tiles_per_step = max(1, max_elements // (TILE * TILE * chunk))
    for k0 in range(0, max_count, chunk):
        live = torch.nonzero((tile_count > k0) & (trans.amax(dim=1) >= T_STOP)).squeeze(1)
        if live.numel() == 0:
            break
        for part in torch.split(live, tiles_per_step):
            slot = k0 + steps  # [K]
            in_list = slot.unsqueeze(0) < tile_count[part].unsqueeze(1)  # [A, K]
            entry = (tile_start[part].unsqueeze(1) + slot.unsqueeze(0)).clamp_max(
                max(sorted_gid.numel() - 1, 0)
            )
            gsel = sorted_gid[entry]  # [A, K]
            p = params[gsel]  # [A, K, 6]
            du = pxf[part].unsqueeze(2) - p[:, None, :, 0]  # [A, 256, K]
            dv = pyf[part].unsqueeze(2) - p[:, None, :, 1]
            d = p[:, None, :, 2] * du * du + 2.0 * p[:, None, :, 3] * du * dv + p[:, None, :, 4] * dv * dv
            alpha = torch.clamp(p[:, None, :, 5] * torch.exp(-0.5 * d), max=ALPHA_MAX)
            alpha = alpha * ((d <= MAX_D) & (alpha >= ALPHA_MIN) & in_list.unsqueeze(1))
            keep = 1.0 - alpha  # ≥ 0.01, so dividing by it below is safe
            t_after = trans[part].unsqueeze(2) * torch.cumprod(keep, dim=2)  # [A, 256, K]
            t_before = t_after / keep
            # a Gaussian counts iff the pixel had not stopped in front of it (T is non-increasing)
            counted = t_before >= T_STOP
            weight = alpha * t_before * counted
            acc[part] += torch.einsum("apk,akc->apc", weight, color_flat[gsel])
            # the pixel's T after the chunk: after its last counted Gaussian (the smallest counted T)
            trans[part] = torch.where(counted, t_after, trans[part].unsqueeze(2)).amin(dim=2)

    # assemble tiles into images
    trans = torch.where(inside, trans, torch.ones_like(trans))
    rgb = acc + trans.unsqueeze(-1) * background.to(means.dtype)
    rgb = rgb.reshape(b, tiles_y, tiles_x, TILE, TILE, 3).permute(0, 1, 3, 2, 4, 5)
    rgb = rgb.reshape(b, tiles_y * TILE, tiles_x * TILE, 3)[:, :h, :w]
    alpha_img = (1.0 - trans).reshape(b, tiles_y, tiles_x, TILE, TILE).permute(0, 1, 3, 2, 4)
    alpha_img = alpha_img.reshape(b, tiles_y * TILE, tiles_x * TILE)[:, :h, :w]
    rgb_u8 = torch.clamp(torch.floor(rgb * 255.0 + 0.5), 0, 255).to(torch.uint8)
    return rgb_u8.contiguous(), alpha_img.contiguous()


def rasterize_torch(
    g: PosedGaussians,
    camera: Camera,
    background: np.ndarray,  # [3] float32
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """numpy in, numpy out: rgb uint8 [B, H, W, 3] and alpha float32 [B, H, W].

    ``device`` defaults to CUDA when available. Inputs are assumed checked
    (see :func:`engines.splat.rasterize.rasterize`).
    """
    torch = import_torch()
    dev = torch.device(device or default_device())
    with torch.no_grad():

        def put(a: np.ndarray) -> Any:
            return torch.from_numpy(np.require(a, np.float32, ["C", "W"])).to(dev)  # copies read-only views

        rgb, alpha = rasterize_tensors(
            put(g.means),
            put(g.quats),
            put(g.scales),
            put(g.opacities),
            put(g.colors),
            camera,
            put(background),
        )
        return rgb.cpu().numpy(), alpha.cpu().numpy()
