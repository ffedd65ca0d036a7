"""RGB → I420: the numpy reference against FFmpeg's swscale, and the fast paths against the reference.

Tolerances (8-bit steps), and why:

- reference vs swscale (``rgb24`` → ``yuv420p``, what aiortc did to our frames
  before): swscale computes in 15-bit fixed point, and its chroma filter
  reaches a little beyond the 2×2 block, so at hard edges chroma differs by a
  few steps: luma within 1; chroma ≥ 98 % within 1, mean |Δ| ≤ 0.3, none
  beyond 6 (measured on these frames: 98.4 %, 0.21, 5; on the default
  avatar at 512 px: max 3). The BT.709 matrix instead gives luma off by up to
  8 (mean 1.7) and chroma mean |Δ| 1.6, so the check tells the two apart.
- numba (:func:`rgb_to_i420`, the rasteriser's fused I420) vs the float64
  reference: float32 arithmetic may round a value sitting on .5 the other way:
  every value within 1, ≥ 99.9 % exact (measured: 99.99 % on small
  frames, 99.999 % on the default avatar at 512 px).
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from engines.splat.avatar import Avatar
from engines.splat.render import Renderer, RenderError, render
from engines.splat.synthetic import make_test_avatar
from engines.splat.yuv import YUVError, i420_planes, i420_shape, rgb_to_i420, rgb_to_i420_reference


def assert_within_one_step(fast: np.ndarray, ref: np.ndarray) -> None:
    assert fast.shape == ref.shape and fast.dtype == np.uint8
    diff = np.abs(fast.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1, f"max |Δ| = {diff.max()}"
    assert (diff == 0).mean() >= 0.999, f"only {(diff == 0).mean():.6f} exact"


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return make_test_avatar(2500, seed=3)


@pytest.fixture(scope="module")
def frames(avatar: Avatar) -> np.ndarray:
    """uint8 [3, 96, 128, 3]: rendered frames with a face, a background and hard edges."""
    params = np.concatenate(
        [avatar.params({}), avatar.params({"jawOpen": 0.8}), avatar.params({"headYaw": 0.2, "jawOpen": 0.3})]
    )
    return render(avatar, params, (96, 128))


def _swscale(rgb: np.ndarray) -> np.ndarray:
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()


def test_reference_agrees_with_swscale(frames: np.ndarray) -> None:
    h, w = frames.shape[1:3]
    for rgb in frames:
        ours, theirs = rgb_to_i420_reference(rgb), _swscale(rgb)
        assert ours.shape == theirs.shape == (h * 3 // 2, w)
        diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
        assert diff[:h].max() <= 1  # luma
        chroma = diff[h:]
        assert chroma.max() <= 6 and chroma.mean() <= 0.3 and (chroma <= 1).mean() >= 0.98


def test_reference_known_colours() -> None:
    """BT.601 limited range: black (16, 128, 128), white (235, 128, 128), pure red (81, 90, 240)."""
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, 2:4] = 255
    rgb[:, 4:6] = (255, 0, 0)
    y, u, v = i420_planes(rgb_to_i420_reference(rgb), 4, 6)
    np.testing.assert_array_equal(y[0], [16, 16, 235, 235, 81, 81])
    np.testing.assert_array_equal(u[0], [128, 128, 90])
    np.testing.assert_array_equal(v[0], [128, 128, 240])


def test_reference_chroma_is_the_block_mean() -> None:
    """A 2×2 block half white, half black has the chroma of mid grey and the luma of each pixel."""
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0] = (200, 40, 90)
    y, u, v = i420_planes(rgb_to_i420_reference(rgb), 2, 2)
    mean = np.array([100.0, 20.0, 45.0])
    assert u[0, 0] == int(
        np.floor(128 + (-37.797 * mean[0] - 74.203 * mean[1] + 112.0 * mean[2]) / 255 + 0.5)
    )
    assert v[0, 0] == int(np.floor(128 + (112.0 * mean[0] - 93.786 * mean[1] - 18.214 * mean[2]) / 255 + 0.5))
    assert y[1, 0] == y[1, 1] == 16 and y[0, 0] == y[0, 1] > 16


def test_numba_conversion_matches_reference(frames: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (2, 64, 80, 3), dtype=np.uint8)  # every rounding case, not just smooth areas
    for batch in (frames, noise):
        assert_within_one_step(rgb_to_i420(batch), rgb_to_i420_reference(batch))
    assert rgb_to_i420(frames[0]).shape == (144, 128)  # unbatched in, unbatched out


def test_planes_are_views_in_the_documented_layout() -> None:
    frame = np.arange(6 * 4, dtype=np.uint8).reshape(i420_shape(4, 4))
    y, u, v = i420_planes(frame, 4, 4)
    assert y.shape == (4, 4) and u.shape == v.shape == (2, 2)
    assert y[0, 0] == 0 and u[0, 0] == 16 and v[0, 0] == 20 and v[1, 1] == 23
    y[0, 0] = 99
    assert frame[0, 0] == 99


@pytest.mark.parametrize(
    "bad", [np.zeros((5, 4, 3), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4))]
)
def test_bad_input_is_refused(bad: np.ndarray) -> None:
    with pytest.raises(YUVError):
        rgb_to_i420_reference(bad)
    with pytest.raises(YUVError):
        rgb_to_i420(bad)


@pytest.mark.parametrize("size", [(64, 48), (96, 160), (30, 34)])
def test_renderer_i420_is_its_rgb_converted(avatar: Avatar, size: tuple[int, int]) -> None:
    """Over the plate the rasteriser writes I420 itself; it must be the RGB frame, converted."""
    renderer = Renderer(avatar)
    params = np.concatenate([avatar.params({}), avatar.params({"jawOpen": 0.7, "headYaw": -0.2})])
    i420 = renderer.render_i420(params, size)
    assert renderer.plate_frames == 2  # the fused path, not the fallback
    assert i420.shape == (2, *i420_shape(*size))
    assert_within_one_step(i420, rgb_to_i420_reference(renderer.render(params, size)))
    assert not np.array_equal(i420[0], i420[1])


def test_renderer_i420_copies_the_plate_exactly_where_nothing_moves(avatar: Avatar) -> None:
    """Tiles no moving Gaussian touches are copied from the cached plate; converting them is the same."""
    from engines.splat.raster_cpu import rasterize_cpu_i420
    from engines.splat.rig import pose

    renderer = Renderer(avatar)
    params = avatar.params({"jawOpen": 0.5})
    copied = renderer.render_i420(params, (96, 128))
    assert renderer._front is not None
    converted = rasterize_cpu_i420(
        pose(renderer._front, params),
        avatar.camera.scaled(96, 128),
        np.asarray(avatar.background, np.float32),
        plate=renderer._plate(96, 128, 0),
    )
    np.testing.assert_array_equal(copied, converted)


def test_renderer_i420_falls_back_to_conversion(avatar: Avatar) -> None:
    renderer = Renderer(avatar, backend="reference")
    params = avatar.params({"jawOpen": 0.4})
    i420 = renderer.render_i420(params, (32, 48))
    assert renderer.plate_frames == 0
    assert_within_one_step(i420, rgb_to_i420_reference(render(avatar, params, (32, 48), backend="reference")))


def test_renderer_i420_refuses_odd_sizes(avatar: Avatar) -> None:
    with pytest.raises(RenderError, match="even"):
        Renderer(avatar).render_i420(avatar.neutral(1), (63, 48))
