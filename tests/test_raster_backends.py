"""The fast rasterisers ('cpu' numba, 'torch') against the reference, with explicit tolerances.

Tolerances (uint8 units, i.e. 1/255), and why:

- float32 arithmetic (fast backends) vs float64 (reference) moves a channel by
  at most one rounding step: ≥ 99.9 % of values must be within 1.
- A pixel lying within float error of a hard edge of the semantics (d = 9, or
  α = 1/255) can flip between "touched" and "not touched"; the jump there is
  at most α(d = 9) = 0.99·e^-4.5 ≈ 0.011 ≈ 2.8/255 (times a colour difference
  ≤ 1), so no value may differ by more than 3.
- On average the images must agree to within 0.05/255 (a systematic error,
  such as a wrong blur, a transposed conic or a missing early stop, moves
  the mean by far more).
- alpha (float): ≥ 99.9 % of pixels within 1e-4, none beyond 0.012 (same edge flip).
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.splat.raster_reference import rasterize_reference
from engines.splat.rasterize import rasterize
from engines.splat.types import Camera, PosedGaussians

SIZES = [(64, 48), (128, 128), (96, 160)]  # (H, W)


def random_gaussians(batch: int, n: int, seed: int, opaque: bool = False) -> PosedGaussians:
    """Random anisotropic Gaussians in front of (and some behind) a camera at the origin."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-1.0, 1.0, (batch, n, 2))
    z = rng.uniform(-0.5, 4.0, (batch, n, 1))  # some behind the camera or nearer than 0.01
    q = rng.normal(size=(batch, n, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    scales = rng.uniform(0.003, 0.15, (batch, n, 3))
    scales[..., rng.integers(0, 3)] *= 0.2  # flat splats, as on a surface
    low = 0.6 if opaque else 0.02
    return PosedGaussians(
        means=np.concatenate([xy, z], axis=-1).astype(np.float32),
        quats=q.astype(np.float32),
        scales=scales.astype(np.float32),
        opacities=rng.uniform(low, 1.0, (batch, n)).astype(np.float32),
        colors=rng.uniform(0.0, 1.0, (batch, n, 3)).astype(np.float32),
    )


def camera_for(h: int, w: int) -> Camera:
    return Camera(fx=0.9 * w, fy=0.9 * w, cx=w / 2, cy=h / 2 + 3.0, width=w, height=h)


def assert_close_to_reference(
    rgb: np.ndarray, alpha: np.ndarray, ref_rgb: np.ndarray, ref_alpha: np.ndarray
) -> None:
    assert rgb.shape == ref_rgb.shape and rgb.dtype == np.uint8
    assert alpha.shape == ref_alpha.shape and alpha.dtype == np.float32
    diff = np.abs(rgb.astype(np.int16) - ref_rgb.astype(np.int16))
    assert diff.max() <= 3, f"max |Δ| = {diff.max()}/255"
    assert (diff <= 1).mean() >= 0.999, f"only {(diff <= 1).mean():.5f} of values within 1/255"
    assert diff.mean() <= 0.05, f"mean |Δ| = {diff.mean():.4f}/255"
    adiff = np.abs(alpha - ref_alpha)
    assert adiff.max() <= 0.012
    assert (adiff <= 1e-4).mean() >= 0.999


CASES = [(size, seed, opaque) for size in SIZES for seed, opaque in ((1, False), (2, True))]


@pytest.fixture(scope="module")
def reference_images() -> dict[
    tuple[tuple[int, int], int, bool], tuple[PosedGaussians, np.ndarray, np.ndarray]
]:
    """Reference renders of each case, computed once (the reference is slow)."""
    out = {}
    bg = np.array([0.2, 0.5, 0.8], dtype=np.float32)
    for size, seed, opaque in CASES:
        g = random_gaussians(2, 400 if opaque else 250, seed * 100 + size[0], opaque)
        rgb, alpha = rasterize_reference(g, camera_for(*size), bg)
        out[(size, seed, opaque)] = (g, rgb, alpha)
    return out


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize(("size", "seed", "opaque"), CASES)
def test_backend_matches_reference(
    backend: str,
    size: tuple[int, int],
    seed: int,
    opaque: bool,
    reference_images: dict[tuple[tuple[int, int], int, bool], tuple[PosedGaussians, np.ndarray, np.ndarray]],
) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    g, ref_rgb, ref_alpha = reference_images[(size, seed, opaque)]
    bg = np.array([0.2, 0.5, 0.8], dtype=np.float32)
    rgb, alpha = rasterize(g, camera_for(*size), bg, backend=backend, return_alpha=True)
    assert_close_to_reference(rgb, alpha, ref_rgb, ref_alpha)
    # the scene is not trivially empty, and frames of the batch differ
    assert (ref_alpha > 0.5).mean() > 0.05
    assert not np.array_equal(rgb[0], rgb[1])


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_backend_ties_and_early_stop_match_reference(backend: str) -> None:
    """Equal depths keep index order; stacked opaque layers stop each pixel (front layers win)."""
    if backend == "torch":
        pytest.importorskip("torch")
    n = 12
    quats = np.zeros((1, n, 4), dtype=np.float32)
    quats[..., 0] = 1.0
    means = np.zeros((1, n, 3), dtype=np.float32)
    means[..., 2] = 1.0  # all at the same depth
    means[0, 6:, 2] = 0.5  # six in front, also tied among themselves
    rng = np.random.default_rng(5)
    g = PosedGaussians(
        means=means,
        quats=quats,
        scales=np.full((1, n, 3), 0.05, dtype=np.float32),
        opacities=np.full((1, n), 0.99, dtype=np.float32),
        colors=rng.uniform(0, 1, (1, n, 3)).astype(np.float32),
    )
    cam = Camera(fx=40.0, fy=40.0, cx=20.5, cy=16.5, width=40, height=32)
    bg = np.zeros(3, dtype=np.float32)
    ref_rgb, ref_alpha = rasterize_reference(g, cam, bg)
    rgb, alpha = rasterize(g, cam, bg, backend=backend, return_alpha=True)
    assert_close_to_reference(rgb, alpha, ref_rgb, ref_alpha)
    # the centre shows Gaussian 6 (first of the front group) almost alone
    np.testing.assert_allclose(rgb[0, 16, 20] / 255.0, g.colors[0, 6], atol=0.015)


def test_cpu_batch_equals_frame_by_frame() -> None:
    g = random_gaussians(3, 300, 9)
    cam = camera_for(64, 80)
    bg = np.array([1.0, 1.0, 1.0], dtype=np.float32)
    batched = rasterize(g, cam, bg, backend="cpu")
    for f in range(3):
        one = PosedGaussians(
            g.means[f : f + 1],
            g.quats[f : f + 1],
            g.scales[f : f + 1],
            g.opacities[f : f + 1],
            g.colors[f : f + 1],
        )
        np.testing.assert_array_equal(batched[f], rasterize(one, cam, bg, backend="cpu")[0])


def test_cpu_handles_no_visible_gaussians() -> None:
    g = random_gaussians(1, 50, 3)
    g.means[..., 2] = -1.0  # all behind the camera
    rgb, alpha = rasterize(
        g, camera_for(40, 40), np.array([0.0, 1.0, 0.0], dtype=np.float32), "cpu", return_alpha=True
    )
    assert np.all(rgb[..., 1] == 255) and np.all(rgb[..., 0] == 0)
    assert np.all(alpha == 0.0)


@pytest.mark.parametrize(("chunk", "max_elements"), [(3, 256 * 3 * 5), (128, 1 << 26)])
def test_torch_chunking_matches_reference(chunk: int, max_elements: int) -> None:
    """Many small steps with split tile groups, and the few large steps used on CUDA, draw the same picture."""
    torch = pytest.importorskip("torch")
    from engines.splat.raster_torch import rasterize_tensors

    g = random_gaussians(2, 300, 4, opaque=True)
    cam = camera_for(48, 64)
    bg = np.array([0.3, 0.3, 0.3], dtype=np.float32)
    ref_rgb, ref_alpha = rasterize_reference(g, cam, bg)
    t = [torch.from_numpy(a) for a in (g.means, g.quats, g.scales, g.opacities, g.colors)]
    rgb, alpha = rasterize_tensors(
        t[0], t[1], t[2], t[3], t[4], cam, torch.from_numpy(bg), chunk=chunk, max_elements=max_elements
    )
    assert_close_to_reference(rgb.numpy(), alpha.numpy(), ref_rgb, ref_alpha)


def test_cpu_warmup_compiles() -> None:
    from engines.splat.raster_cpu import warmup

    assert warmup() >= 0.0


@pytest.mark.parametrize("backend", ["reference", "cpu", "torch"])
def test_empty_gaussian_set_draws_the_background(backend: str) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    g = PosedGaussians(
        means=np.zeros((2, 0, 3), dtype=np.float32),
        quats=np.zeros((2, 0, 4), dtype=np.float32),
        scales=np.zeros((2, 0, 3), dtype=np.float32),
        opacities=np.zeros((2, 0), dtype=np.float32),
        colors=np.zeros((2, 0, 3), dtype=np.float32),
    )
    rgb, alpha = rasterize(
        g, camera_for(20, 36), np.array([1.0, 0.5, 0.0], dtype=np.float32), backend, return_alpha=True
    )
    assert rgb.shape == (2, 20, 36, 3)
    assert np.all(rgb == np.array([255, 128, 0], dtype=np.uint8))
    assert np.all(alpha == 0.0)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 3000])
def test_cpu_depth_order_is_a_stable_sort(n: int) -> None:
    """The radix sort gives np.argsort(kind='stable'): ties keep index order, culled (+inf) last."""
    from engines.splat.raster_cpu import _depth_order_into

    rng = np.random.default_rng(n)
    depth = rng.uniform(0.01, 40.0, n).astype(np.float32)
    if n > 2:
        depth[rng.integers(0, n, n // 3)] = np.inf
        depth[rng.integers(0, n, n // 3)] = np.float32(1.5)  # many exact ties
        depth[rng.integers(0, n, n // 5)] = np.nextafter(np.float32(1.5), np.float32(2.0))
    order = _depth_order_into(depth, np.empty(n, np.int64), np.empty(n, np.int64))
    assert order.dtype == np.int64
    np.testing.assert_array_equal(order, np.argsort(depth, kind="stable"))


def test_cpu_binning_in_a_workspace_reuses_its_buffers_and_bins_the_same() -> None:
    """Frame after frame a render thread projects and bins into the same buffers (no new allocations,
    which under the server's fixed mmap threshold were page-faulted in afresh every frame), with the
    same lists as fresh arrays, also when the next frame's tile lists are longer or the scene smaller."""
    from engines.splat.raster_cpu import _Workspace, project_and_bin

    camera = camera_for(64, 80)
    rng = np.random.default_rng(5)
    work = _Workspace()

    def scene(n: int, size: float) -> tuple[np.ndarray, ...]:
        means = np.stack(
            [rng.uniform(-0.8, 0.8, n), rng.uniform(-0.6, 0.6, n), rng.uniform(2.0, 6.0, n)], axis=1
        ).astype(np.float32)
        quats = rng.normal(size=(n, 4)).astype(np.float32)
        scales = np.full((n, 3), size, np.float32)
        opacities = rng.uniform(0.0, 1.0, n).astype(np.float32)
        opacities[::7] = 0.0  # culled
        return means, quats, scales, opacities

    seen: list[int] = []
    for n, size in [(300, 0.02), (300, 0.2), (120, 0.05)]:  # the second has far longer tile lists
        s = scene(n, size)
        fresh = project_and_bin(*s, camera)
        reused = project_and_bin(*s, camera, work)
        for a, b in zip(fresh[1:4], reused[1:4], strict=True):  # rect, starts, ids
            np.testing.assert_array_equal(a, b)
        visible = fresh[1][:, 0] <= fresh[1][:, 1]  # a culled Gaussian's feat row is never read
        assert 0 < visible.sum() < n
        np.testing.assert_array_equal(fresh[0][visible], reused[0][visible])
        assert fresh[4] == reused[4]
        seen.append(reused[0].__array_interface__["data"][0])
    assert seen[0] == seen[1] == seen[2]  # feat: one buffer for all three frames


def test_cpu_box_shrinks_for_faint_gaussians_only() -> None:
    """A Gaussian's pixel box spans d ≤ min(9, 2 ln(255 o)): where α = o·exp(-d/2) ≥ 1/255 can hold. The
    preprocess takes the log only below 255·o = 90 (above it the limit is 9 anyway); boxes on both sides
    of that threshold are the ones the formula gives."""
    from engines.splat.raster_cpu import project_and_bin

    camera = camera_for(64, 64)
    ops = np.array(
        [0.01, 0.05, 0.2, 0.25, 0.3, 89.5 / 255, 89.99 / 255, 90.0 / 255, 90.5 / 255, 0.5, 0.99, 1.0]
    )
    n = len(ops)
    means = np.tile(np.array([[0.0, 0.0, 3.0]], np.float32), (n, 1))
    quats = np.tile(np.array([[1.0, 0.0, 0.0, 0.0]], np.float32), (n, 1))
    scales = np.full((n, 3), 0.11, np.float32)
    opacities = ops.astype(np.float32)
    _, rect, _, _, _ = project_and_bin(means, quats, scales, opacities, camera)
    o = opacities.astype(np.float64)
    var = (camera.fx * 0.11 / 3.0) ** 2 + 0.3  # on the axis: Σ2D = (f s / z)² I + blur
    dmax = np.minimum(9.0, 2.0 * np.log(o * 255.0) + 1e-3)
    r = np.sqrt(dmax * var)
    expected = np.stack([np.ceil(camera.cx - r - 0.5), np.floor(camera.cx + r - 0.5)], axis=1).astype(
        np.int32
    )
    np.testing.assert_array_equal(rect[:, :2], expected)
    assert rect[0, 1] - rect[0, 0] < rect[-1, 1] - rect[-1, 0]  # the faint box is the smaller one
    assert len({tuple(x) for x in rect[8:]}) == 1  # from 255·o = 90 on: the 3σ box


def test_cpu_tile_lists_hold_each_tile_s_gaussians_in_depth_order() -> None:
    """The tile lists are, per tile, exactly the visible Gaussians whose pixel box overlaps the tile, nearest
    first: boxes of one to four tiles (binned without loops) and larger ones, in the middle of the image and
    against its last tile row and column (where a small box's 2×2 block of tiles reaches past the image)."""
    from engines.splat.raster_cpu import TILE, _bin_count, _bin_fill

    rng = np.random.default_rng(11)
    width, height = 75, 50  # 5 × 4 tiles, the last column and row partial
    tiles_x, tiles_y = (width + TILE - 1) // TILE, (height + TILE - 1) // TILE
    n = 400
    j0 = rng.integers(0, width, n)
    i0 = rng.integers(0, height, n)
    size = rng.choice([1, 6, 17, 30, 70], n)  # 1-2 tiles each way, and 2-5
    rect = np.stack(
        [
            j0,
            np.minimum(j0 + rng.integers(0, size), width - 1),
            i0,
            np.minimum(i0 + rng.integers(0, size), height - 1),
        ],
        axis=1,
    ).astype(np.int32)
    rect[[0, 1, 2]] = [
        [70, 74, 45, 49],
        [60, 74, 40, 49],
        [74, 74, 49, 49],
    ]  # against the last row and column
    culled = rng.random(n) < 0.1
    rect[culled] = [1, 0, 1, 0]
    depth = np.where(culled, np.inf, rng.uniform(1.0, 5.0, n))
    order = np.argsort(depth, kind="stable").astype(np.int64)
    span = np.empty((n, 4), np.int32)
    starts, visible = _bin_count(order, rect, tiles_x, tiles_y, span)
    assert visible == n - culled.sum()
    ids = np.empty(int(starts[-1]) + 1, np.int32)
    _bin_fill(order, span, visible, starts, tiles_x, ids)
    for t in range(tiles_x * tiles_y):
        tx, ty = t % tiles_x, t // tiles_x
        expected = [
            k
            for k in order[:visible]
            if rect[k, 0] // TILE <= tx <= rect[k, 1] // TILE
            and rect[k, 2] // TILE <= ty <= rect[k, 3] // TILE
        ]
        assert ids[starts[t] : starts[t + 1]].tolist() == expected, f"tile {t}"
