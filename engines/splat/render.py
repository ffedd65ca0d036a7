"""The public render API: rig parameters in, video frames out (contract item 5).

``render(avatar, params, size, backend, lod)`` checks its inputs, poses the
avatar with :func:`engines.splat.rig.pose` and draws it with
:func:`engines.splat.rasterize.rasterize` through the avatar's camera scaled
to ``size``. Backends: ``"cpu"`` (numba, the real-time CPU path),
``"torch"`` (CUDA when present) and ``"reference"`` (slow; tests).

For a stream of frames of one avatar, :class:`Renderer` gives the same
pictures faster on the CPU: it draws the never-moving static layer once per
(size, lod) and composites only the moving Gaussians over it each frame;
:meth:`Renderer.render_i420` hands out the same frames in the I420 layout a
video encoder takes (BT.601 limited range), written by the rasteriser itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Literal, overload

import numpy as np

from engines.splat.avatar import LAYER_STATIC, Avatar, LodLevel
from engines.splat.rasterize import BACKENDS, RasterizeError, RenderBackend, rasterize
from engines.splat.rig import Poser, RigError, pose
from engines.splat.types import Camera, PosedGaussians

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


def _check_call(
    avatar: Avatar, params: object, size: object, backend: str, lod: object
) -> tuple[np.ndarray, tuple[int, int], int]:
    """All of render()'s boundary checks; returns (params, (H, W), lod)."""
    if backend not in BACKENDS:
        raise RenderError(f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    checked = check_params(avatar, params)
    h, w = check_size(size)
    if isinstance(lod, bool) or not isinstance(lod, int | np.integer) or not 0 <= lod <= len(avatar.lods):
        raise RenderError(f"lod must be an int in 0..{len(avatar.lods)} for this avatar, got {lod!r}")
    return checked, (h, w), int(lod)


@overload
def render(
    avatar: Avatar,
    params: np.ndarray,
    size: tuple[int, int] = ...,
    backend: RenderBackend = ...,
    lod: int = ...,
    return_alpha: Literal[False] = ...,
) -> np.ndarray: ...


@overload
def render(
    avatar: Avatar,
    params: np.ndarray,
    size: tuple[int, int] = ...,
    backend: RenderBackend = ...,
    lod: int = ...,
    *,
    return_alpha: Literal[True],
) -> tuple[np.ndarray, np.ndarray]: ...


def render(
    avatar: Avatar,
    params: np.ndarray,  # [B, C] float32
    size: tuple[int, int] = (512, 512),  # (H, W)
    backend: RenderBackend = "cpu",
    lod: int = 0,
    return_alpha: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render B frames: uint8 [B, H, W, 3] (and alpha float32 [B, H, W] with ``return_alpha``).

    ``lod`` 0 draws every Gaussian; ``lod`` k ≥ 1 draws the distilled level
    ``avatar.lods[k - 1]`` (see :mod:`export.distill`).
    """
    params, (h, w), lod = _check_call(avatar, params, size, backend, lod)
    try:
        posed = pose(avatar, params, lod=int(lod))
        camera = avatar.camera.scaled(h, w)
        rgb, alpha = rasterize(posed, camera, avatar.background, backend=backend, return_alpha=True)
    except (RigError, RasterizeError) as exc:
        raise RenderError(str(exc)) from exc
    if return_alpha:
        return rgb, alpha
    return rgb


def _subset(avatar: Avatar, keep: np.ndarray) -> Avatar:
    """The avatar restricted to the Gaussians where ``keep`` [N] bool is set (rig rows and LODs remapped)."""
    new_id = np.full(avatar.count, -1, dtype=np.int64)
    new_id[keep] = np.arange(int(keep.sum()))
    rig = avatar.rig
    offsets, index, deltas = [0], [], []
    for c in range(len(avatar.channels)):
        idx, delta = rig.channel_deltas(c)
        sel = keep[idx]
        index.append(new_id[idx[sel]])
        deltas.append(delta[sel])
        offsets.append(offsets[-1] + int(sel.sum()))
    lods = []
    for level in avatar.lods:
        sel = keep[level.index]
        lods.append(
            LodLevel(
                new_id[level.index[sel]].astype(np.int32),
                level.scales[sel],
                level.opacities[sel],
                level.colors[sel],
            )
        )
    return dataclasses.replace(
        avatar,
        means=avatar.means[keep],
        quats=avatar.quats[keep],
        scales=avatar.scales[keep],
        opacities=avatar.opacities[keep],
        colors=avatar.colors[keep],
        layers=avatar.layers[keep],
        rig=dataclasses.replace(
            rig,
            delta_offsets=np.asarray(offsets, dtype=np.int64),
            delta_index=np.concatenate(index).astype(np.int32),
            delta_means=np.concatenate(deltas).astype(np.float32),
        ),
        lods=lods,
    )


class Renderer:
    """``render()`` for one avatar, reusing the static layer's picture across frames.

    The static layer (background plate, and torso where it never moves) lies,
    in a head-and-shoulders avatar, behind every moving Gaussian; front-to-back
    compositing then ends with the same static picture every frame. A
    Renderer draws that picture once per (size, lod) as a *plate*
    (premultiplied colour seen through it, and its transmittance) and each
    frame composites only the moving layers over it: with the default avatar
    that skips the ~13k large background Gaussians, most of the rasteriser's
    work. The result differs from :func:`render` by at most one uint8 step:
    the plate is stored as uint8, and the per-pixel stop at T < 1e-4 applies to
    the moving layers only (what a stop would have dropped is < 1e-4).

    The plate holds the static-layer Gaussians that no rig channel moves; the
    rest form a smaller avatar that is posed each frame (so the static ones are
    not even copied). Each call checks that the nearest plate Gaussian lies
    behind the farthest posed one and otherwise falls back to :func:`render`.
    Only the 'cpu' backend uses plates; other backends always render in full.
    """

    def __init__(self, avatar: Avatar, backend: RenderBackend = "cpu") -> None:
        if backend not in BACKENDS:
            raise RenderError(f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.avatar = avatar
        self.backend = backend
        self.plate_frames = 0  # frames drawn over a plate (the rest fell back to render())
        self._plates: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._plates_i420: dict[tuple[int, int, int], np.ndarray] = {}  # the plates as I420 [H·3/2, W]
        self._plates_tiled: dict[tuple[int, int, int], np.ndarray] = {}  # the plates in the tile layout
        # the plate holds static-layer Gaussians that no rig channel moves
        moved = np.zeros(avatar.count, dtype=bool)
        moved[avatar.rig.delta_index] = True
        in_plate = (avatar.layers == LAYER_STATIC) & ~moved
        self._in_plate = [in_plate] + [in_plate[level.index] for level in avatar.lods]  # per lod: [K] bool
        self._plate_near = [
            float(avatar.means[index[sel], 2].min()) if sel.any() else np.inf
            for index, sel in zip(
                [np.arange(avatar.count)] + [level.index for level in avatar.lods],
                self._in_plate,
                strict=True,
            )
        ]
        self._front = _subset(avatar, ~in_plate) if in_plate.any() and not in_plate.all() else None
        self._poser = Poser(self._front) if self._front is not None else None

    def _plate(self, h: int, w: int, lod: int) -> tuple[np.ndarray, np.ndarray]:
        key = (h, w, lod)
        if key not in self._plates:
            from engines.splat.raster_cpu import rasterize_cpu

            posed = pose(self.avatar, self.avatar.neutral(1), lod=lod)  # the plate's Gaussians never move
            keep = self._in_plate[lod]
            static = PosedGaussians(
                np.ascontiguousarray(posed.means[:, keep]),
                np.ascontiguousarray(posed.quats[:, keep]),
                np.ascontiguousarray(posed.scales[:, keep]),
                np.ascontiguousarray(posed.opacities[:, keep]),
                np.ascontiguousarray(posed.colors[:, keep]),
            )
            bg = np.asarray(self.avatar.background, np.float32)
            rgb, alpha = rasterize_cpu(static, self.avatar.camera.scaled(h, w), bg)
            self._plates[key] = (rgb[0].astype(np.float32) / 255.0, 1.0 - alpha[0])
        return self._plates[key]

    def _posed_front(self, params: np.ndarray, lod: int) -> PosedGaussians | None:
        """The moving Gaussians posed for ``params``, or None when this call must draw in full."""
        poser = self._poser
        if self.backend != "cpu" or poser is None or not self._in_plate[lod].any():
            return None
        from engines.splat.raster_cpu import thread_workspace

        # posed into this thread's buffers (used up by this call's rasterisation): a frame's ~0.7 MB of
        # means and quats are not mapped and page-faulted in afresh every frame
        work = thread_workspace()
        b, k = params.shape[0], poser.count(lod)
        means = work.take("posed_means", (b, k, 3), np.float32)
        quats = work.take("posed_quats", (b, k, 4), np.float32)
        if k and poser.pose_into(params, lod, means, quats) >= self._plate_near[lod]:
            return None
        return poser.posed(means, quats, lod)

    def render(
        self,
        params: np.ndarray,  # [B, C] float32
        size: tuple[int, int] = (512, 512),  # (H, W)
        lod: int = 0,
        return_alpha: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Like :func:`render` for this avatar: uint8 [B, H, W, 3] (and alpha float32 [B, H, W])."""
        avatar = self.avatar
        params, (h, w), lod = _check_call(avatar, params, size, self.backend, lod)
        posed = self._posed_front(params, lod)
        if posed is None:
            return render(avatar, params, (h, w), self.backend, lod, return_alpha=return_alpha)  # type: ignore[call-overload]
        from engines.splat.raster_cpu import rasterize_cpu

        rgb, alpha = rasterize_cpu(
            posed,
            avatar.camera.scaled(h, w),
            np.asarray(avatar.background, np.float32),
            plate=self._plate(h, w, lod),
        )
        self.plate_frames += params.shape[0]
        if return_alpha:
            return rgb, alpha
        return rgb

    def render_i420(
        self,
        params: np.ndarray,  # [B, C] float32
        size: tuple[int, int] = (512, 512),  # (H, W), both even
        lod: int = 0,
    ) -> np.ndarray:
        """The frames of :meth:`render` as a video encoder takes them: uint8 I420 [B, H·3/2, W].

        BT.601 limited range (see :mod:`engines.splat.yuv`). Over a plate, the CPU
        rasteriser writes I420 itself (no RGB image, no alpha) and copies the
        plate's own I420 into tiles no moving Gaussian touches; otherwise the RGB
        render is converted with :func:`engines.splat.yuv.rgb_to_i420`.
        """
        from engines.splat.yuv import i420_planes, i420_shape

        params, (h, w), lod = self._check_i420(params, size, lod)
        out = np.empty((params.shape[0], *i420_shape(h, w)), dtype=np.uint8)
        self._draw_i420(params, (h, w), lod, [i420_planes(out[f], h, w) for f in range(params.shape[0])])
        return out

    def render_i420_into(
        self,
        params: np.ndarray,  # [B, C] float32
        planes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],  # per frame: Y [H, W], U, V [H/2, W/2]
        size: tuple[int, int] = (512, 512),  # (H, W), both even
        lod: int = 0,
    ) -> None:
        """:meth:`render_i420` writing frame ``b`` into ``planes[b]`` (writable C-contiguous uint8
        arrays, e.g. views of a video frame's own planes: the picture is not copied again)."""
        params, (h, w), lod = self._check_i420(params, size, lod)
        shapes = ((h, w), (h // 2, w // 2), (h // 2, w // 2))
        if len(planes) != params.shape[0] or not all(
            len(frame) == 3
            and all(
                isinstance(p, np.ndarray)
                and p.dtype == np.uint8
                and p.shape == shape
                and p.flags.c_contiguous
                and p.flags.writeable
                for p, shape in zip(frame, shapes, strict=True)
            )
            for frame in planes
        ):
            raise RenderError(
                f"planes must hold {params.shape[0]} (Y, U, V) triples of writable C-contiguous uint8 arrays "
                f"of shapes {shapes}"
            )
        self._draw_i420(params, (h, w), lod, planes)

    def _check_i420(
        self, params: np.ndarray, size: tuple[int, int], lod: int
    ) -> tuple[np.ndarray, tuple[int, int], int]:
        from engines.splat.yuv import YUVError, i420_shape

        params, (h, w), lod = _check_call(self.avatar, params, size, self.backend, lod)
        try:
            i420_shape(h, w)
        except YUVError as exc:
            raise RenderError(str(exc)) from exc
        return params, (h, w), lod

    def _draw_i420(
        self,
        params: np.ndarray,
        size: tuple[int, int],
        lod: int,
        planes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> None:
        """The frames of checked ``params`` into ``planes`` (one (Y, U, V) per frame)."""
        from engines.splat.yuv import i420_planes, rgb_to_i420

        avatar = self.avatar
        h, w = size
        posed = self._posed_front(params, lod)
        if posed is None:
            full = rgb_to_i420(render(avatar, params, (h, w), self.backend, lod))
            for f, (y, u, v) in enumerate(planes):
                fy, fu, fv = i420_planes(full[f], h, w)
                y[...], u[...], v[...] = fy, fu, fv
            return
        from engines.splat.raster_cpu import rasterize_cpu_i420_into

        rasterize_cpu_i420_into(
            posed,
            avatar.camera.scaled(h, w),
            np.asarray(avatar.background, np.float32),
            planes,
            plate=self._plate(h, w, lod),
            backdrop_i420=self._plate_i420(h, w, lod),
            backdrop_tiles=self._plate_tiled(h, w, lod),
        )
        self.plate_frames += params.shape[0]

    def _plate_i420(self, h: int, w: int, lod: int) -> np.ndarray:
        from engines.splat.raster_cpu import backdrop_i420

        return self._plate_as(self._plates_i420, backdrop_i420, h, w, lod)

    def _plate_tiled(self, h: int, w: int, lod: int) -> np.ndarray:
        from engines.splat.raster_cpu import tile_backdrop

        return self._plate_as(self._plates_tiled, tile_backdrop, h, w, lod)

    def _plate_as(
        self,
        cache: dict[tuple[int, int, int], np.ndarray],
        build: Callable[[Camera, np.ndarray, tuple[np.ndarray, np.ndarray] | None], np.ndarray],
        h: int,
        w: int,
        lod: int,
    ) -> np.ndarray:
        """The plate of (h, w, lod) in another layout (``build`` of camera, background, plate), made once."""
        key = (h, w, lod)
        if key not in cache:
            cache[key] = build(
                self.avatar.camera.scaled(h, w),
                np.asarray(self.avatar.background, np.float32),
                self._plate(h, w, lod),
            )
        return cache[key]
