"""The reference rasteriser against hand-computed cases (contract item 2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from engines.splat.raster_reference import rasterize_reference, rasterize_reference_float
from engines.splat.rasterize import RasterizeError, rasterize
from engines.splat.types import Camera, PosedGaussians

# 32×32 image, centre of pixel (row 16, col 16) at (u, v) = (16.5, 16.5) on the optical axis
CAM = Camera(fx=100.0, fy=100.0, cx=16.5, cy=16.5, width=32, height=32)
BG = np.array([0.0, 0.0, 1.0], dtype=np.float32)
# fx = 128 keeps the test positions and scales exact in float32
CAM128 = Camera(fx=128.0, fy=128.0, cx=16.5, cy=16.5, width=32, height=32)


def gaussians(
    means: Sequence[Sequence[float]],
    scales: Sequence[float],
    opacities: Sequence[float],
    colors: Sequence[Sequence[float]],
) -> PosedGaussians:
    """Isotropic Gaussians (identity rotation), one frame."""
    n = len(means)
    quats = np.zeros((1, n, 4), dtype=np.float32)
    quats[..., 0] = 1.0
    return PosedGaussians(
        means=np.asarray([means], dtype=np.float32),
        quats=quats,
        scales=np.repeat(np.asarray(scales, dtype=np.float32)[None, :, None], 3, axis=2),
        opacities=np.asarray([opacities], dtype=np.float32),
        colors=np.asarray([colors], dtype=np.float32),
    )


def expected_alpha_isotropic(mean: list[float], s: float, opacity: float, cam: Camera) -> np.ndarray:
    """α over the 32×32 image for one isotropic Gaussian (Σ = s²·I), written straight from the contract.

    With Σ = s²·I, Σ2D = s²·J·Jᵀ + 0.3·I, and J·Jᵀ has the closed form below.
    """
    x, y, z = mean
    u, v = cam.fx * x / z + cam.cx, cam.fy * y / z + cam.cy
    jjt = np.array(
        [
            [cam.fx**2 / z**2 * (1 + x**2 / z**2), cam.fx * cam.fy * x * y / z**4],
            [cam.fx * cam.fy * x * y / z**4, cam.fy**2 / z**2 * (1 + y**2 / z**2)],
        ]
    )
    inv = np.linalg.inv(s**2 * jjt + 0.3 * np.eye(2))
    jj, ii = np.meshgrid(np.arange(32) + 0.5, np.arange(32) + 0.5)
    du, dv = jj - u, ii - v
    d = inv[0, 0] * du**2 + 2 * inv[0, 1] * du * dv + inv[1, 1] * dv**2
    a = np.minimum(0.99, opacity * np.exp(-0.5 * d))
    return np.where((d <= 9.0) & (a >= 1 / 255), a, 0.0)


def test_single_gaussian_centre_pixel_is_exact() -> None:
    # σ = 0.01 at z = 1 with fx = 100 → 1 px; Σ2D = 1.3·I; centre pixel d = 0 → α = o
    g = gaussians([[0.0, 0.0, 1.0]], [0.01], [0.8], [[1.0, 0.0, 0.0]])
    rgb, alpha = rasterize_reference(g, CAM, BG)
    assert rgb.shape == (1, 32, 32, 3) and rgb.dtype == np.uint8
    assert alpha[0, 16, 16] == pytest.approx(0.8, abs=1e-6)
    # 0.8 red over blue background: (0.8, 0, 0.2) → (204, 0, 51)
    assert tuple(rgb[0, 16, 16]) == (204, 0, 51)
    # neighbour: d = 1/1.3
    assert alpha[0, 16, 17] == pytest.approx(0.8 * np.exp(-0.5 / 1.3), abs=1e-6)


def test_single_gaussian_whole_alpha_map_matches_formula() -> None:
    # centre off-axis between pixels (so J's off-diagonal terms matter), σ ≈ 1.5 px, opacity high
    # enough that the d ≤ 9 cut shows (α(d = 9) ≈ 0.011 > 1/255)
    mean = [(8.0 - 16.5) / 128.0 * 2.0, (25.0 - 16.5) / 128.0 * 2.0, 2.0]
    s = 1.5 * 2.0 / 128.0
    g = gaussians([mean], [s], [0.99], [[1, 1, 1]])
    _, alpha = rasterize_reference(g, CAM128, BG)
    expected = expected_alpha_isotropic(mean, s, 0.99, CAM128)
    np.testing.assert_allclose(alpha[0], expected, atol=1e-6)
    # the 3σ cut is really there: pixels just outside d = 9 would have α ≥ 1/255 without it
    ring = (expected == 0) & (alpha[0] == 0)
    jj, ii = np.meshgrid(np.arange(32) + 0.5, np.arange(32) + 0.5)
    near = (np.abs(jj - 8.0) < 6) & (np.abs(ii - 25.0) < 6)
    assert (ring & near).sum() > 10


def test_two_overlapping_gaussians_composite_front_to_back() -> None:
    red, green = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    # green is first in the arrays but further away: red must be in front
    g = gaussians([[0, 0, 2.0], [0, 0, 1.0]], [0.002, 0.001], [0.5, 0.5], [green, red])
    rgb, alpha = rasterize_reference_float(g, CAM, BG)
    # C = red·0.5 + green·0.5·0.5, T = 0.25 → + 0.25·blue
    np.testing.assert_allclose(rgb[0, 16, 16], [0.5, 0.25, 0.25], atol=1e-6)
    assert alpha[0, 16, 16] == pytest.approx(0.75, abs=1e-9)
    # swap depths: now green is in front
    g2 = gaussians([[0, 0, 1.0], [0, 0, 2.0]], [0.001, 0.002], [0.5, 0.5], [green, red])
    rgb2, _ = rasterize_reference_float(g2, CAM, BG)
    np.testing.assert_allclose(rgb2[0, 16, 16], [0.25, 0.5, 0.25], atol=1e-6)


def test_equal_depth_keeps_index_order() -> None:
    red, green = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    g = gaussians([[0, 0, 1.0], [0, 0, 1.0]], [0.001, 0.001], [0.5, 0.5], [green, red])
    rgb, _ = rasterize_reference_float(g, CAM, BG)
    np.testing.assert_allclose(rgb[0, 16, 16], [0.25, 0.5, 0.25], atol=1e-6)


def test_early_termination_stops_a_pixel() -> None:
    # three 0.99 layers take T to 1e-6 < 1e-4: the fourth (blue) must add nothing
    cols = [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]]
    g = gaussians([[0, 0, 1.0 + 0.1 * k] for k in range(4)], [0.001] * 4, [1.0] * 4, cols)
    rgb, alpha = rasterize_reference_float(g, CAM, np.zeros(3, dtype=np.float32))
    t = 1.0 - alpha[0, 16, 16]
    assert t == pytest.approx(0.01**3, rel=1e-6)  # not 0.01**4
    expected = np.array([0.99 + 0.99 * 0.01**2, 0.99 * 0.01 + 0.99 * 0.01**2, 0.0])
    np.testing.assert_allclose(rgb[0, 16, 16], expected, rtol=1e-9)


def test_background_shows_through_empty_pixels() -> None:
    g = gaussians([[0, 0, 1.0]], [0.01], [0.9], [[1, 1, 1]])
    rgb, alpha = rasterize_reference(g, CAM, np.array([0.2, 0.4, 0.6], dtype=np.float32))
    # the corner is ~16 px from a 1 px Gaussian: pure background
    assert tuple(rgb[0, 0, 0]) == (51, 102, 153)
    assert alpha[0, 0, 0] == 0.0


@pytest.mark.parametrize(
    "mean",
    [
        [0.0, 0.0, 0.005],  # nearer than 0.01
        [0.0, 0.0, -1.0],  # behind the camera
        [3.0, 0.0, 1.0],  # projects 300 px right of the image, far beyond its 3σ box
        [0.0, -3.0, 1.0],  # above the image
    ],
)
def test_culled_gaussians_draw_nothing(mean: list[float]) -> None:
    g = gaussians([mean], [0.01], [0.9], [[1, 1, 1]])
    rgb, alpha = rasterize_reference(g, CAM, BG)
    assert np.all(alpha == 0.0)
    assert np.all(rgb[0] == np.array([0, 0, 255], dtype=np.uint8))


def test_offscreen_centre_still_draws_its_visible_tail() -> None:
    # centre 3 px left of the image, σ = 2 px: the ellipse reaches into columns 0..2
    mean = [(-3.0 - 16.5) / 128.0, 0.0, 1.0]
    g = gaussians([mean], [2.0 / 128.0], [0.9], [[1, 1, 1]])
    _, alpha = rasterize_reference(g, CAM128, BG)
    expected = expected_alpha_isotropic(mean, 2.0 / 128.0, 0.9, CAM128)
    assert expected[:, 0].max() > 0.1
    np.testing.assert_allclose(alpha[0], expected, atol=1e-6)


def test_rasterize_boundary_errors() -> None:
    g = gaussians([[0, 0, 1.0]], [0.01], [0.9], [[1, 1, 1]])
    with pytest.raises(RasterizeError, match="unknown render backend"):
        rasterize(g, CAM, BG, backend="vulkan")
    bad = PosedGaussians(g.means.astype(np.float64), g.quats, g.scales, g.opacities, g.colors)
    with pytest.raises(RasterizeError, match="float32"):
        rasterize(bad, CAM, BG, backend="reference")
    bad = PosedGaussians(g.means, g.quats[:, :, :3], g.scales, g.opacities, g.colors)
    with pytest.raises(RasterizeError, match="quats"):
        rasterize(bad, CAM, BG, backend="reference")
    with pytest.raises(RasterizeError, match="background"):
        rasterize(g, CAM, np.zeros(4, dtype=np.float32), backend="reference")
    with pytest.raises(RasterizeError, match="intrinsics"):
        rasterize(g, Camera(0.0, 100.0, 16, 16, 32, 32), BG, backend="reference")


def test_camera_scaled_keeps_the_view() -> None:
    cam = Camera(fx=500.0, fy=500.0, cx=256.0, cy=256.0, width=512, height=512)
    small = cam.scaled(128, 256)
    assert (small.width, small.height) == (256, 128)
    assert small.fx == pytest.approx(250.0) and small.fy == pytest.approx(125.0)
    assert small.cx == pytest.approx(128.0) and small.cy == pytest.approx(64.0)
