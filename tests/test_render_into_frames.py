"""Frames drawn straight into video frames' planes (Renderer.render_i420_into, FrameRenderer.render_frames).

The server's render worker hands PyAV no array to copy: the rasteriser writes each frame's I420 into a
new ``av.VideoFrame``'s own planes. The pictures must be the ones :meth:`Renderer.render_i420` returns,
bit for bit, and a frame handed out must never change when the next one is drawn.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.splat.avatar import Avatar
from engines.splat.render import Renderer, RenderError
from engines.splat.synthetic import make_test_avatar
from engines.splat.yuv import i420_planes, i420_shape
from realtime.media.frame_renderer import FrameRenderer

SIZE = (64, 96)


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return make_test_avatar()


def _params(avatar: Avatar) -> np.ndarray:
    return np.concatenate(
        [
            avatar.params({"jawOpen": 0.6, "headYaw": 0.1}),
            avatar.params({"headPitch": -0.1, "eyeBlinkLeft": 1.0}),
        ]
    )


def _frame_i420(frame: object) -> np.ndarray:
    return np.asarray(frame.to_ndarray(format="yuv420p"))  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_render_i420_into_writes_what_render_i420_returns(avatar: Avatar, backend: str) -> None:
    """Over the plate (cpu) and through the fallback (reference): every pixel written, the same values."""
    renderer = Renderer(avatar, backend=backend)  # type: ignore[arg-type]
    params = _params(avatar)
    expected = renderer.render_i420(params, SIZE)
    out = np.full((2, *i420_shape(*SIZE)), 77, np.uint8)  # stale bytes must all be overwritten
    renderer.render_i420_into(params, [i420_planes(out[f], *SIZE) for f in range(2)], SIZE)
    np.testing.assert_array_equal(out, expected)
    assert (renderer.plate_frames > 0) == (backend == "cpu")


def test_render_i420_into_refuses_wrong_planes(avatar: Avatar) -> None:
    renderer = Renderer(avatar)
    params = avatar.neutral(1)
    h, w = SIZE
    good = (
        np.zeros((h, w), np.uint8),
        np.zeros((h // 2, w // 2), np.uint8),
        np.zeros((h // 2, w // 2), np.uint8),
    )
    for bad in (
        [],  # one triple per frame
        [(good[0], good[1])],
        [(good[0][:, : w // 2], good[1], good[2])],  # wrong shape
        [(good[0].astype(np.float32), good[1], good[2])],
        [(np.zeros((h, 2 * w), np.uint8)[:, ::2], good[1], good[2])],  # not contiguous
    ):
        with pytest.raises(RenderError, match="planes"):
            renderer.render_i420_into(params, bad, SIZE)  # type: ignore[arg-type]
    readonly = good[0].copy()
    readonly.flags.writeable = False
    with pytest.raises(RenderError, match="planes"):
        renderer.render_i420_into(params, [(readonly, good[1], good[2])], SIZE)


def test_render_frames_draws_into_the_frames_it_hands_out(
    avatar: Avatar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full size: the frames hold render_i420's pictures exactly; earlier frames stay as they were."""
    fr = FrameRenderer(avatar, SIZE)

    def copied(image: np.ndarray) -> None:
        raise AssertionError("a full-size yuv420p frame was copied from an image")

    monkeypatch.setattr(fr, "to_video_frame", copied)
    params = _params(avatar)
    expected = fr._splat.render_i420(params, SIZE)
    first = fr.render_frames(params, 0)
    assert [(f.height, f.width, f.format.name) for f in first] == [(*SIZE, "yuv420p")] * 2
    kept = [_frame_i420(f).copy() for f in first]
    for f in range(2):
        np.testing.assert_array_equal(kept[f], expected[f])
    # the next frames (a different pose) are new frames: the ones handed out before do not change
    second = fr.render_frames(params[::-1].copy(), 0)
    for f in range(2):
        np.testing.assert_array_equal(_frame_i420(first[f]), kept[f])
        np.testing.assert_array_equal(_frame_i420(second[f]), expected[1 - f])
    assert not any(a is b for a in first for b in second)


def test_render_frames_scaled_levels_match_to_video_frame(avatar: Avatar) -> None:
    """Rungs that render smaller go through render + to_video_frame (scaled up) as before."""
    fr = FrameRenderer(avatar, SIZE)
    params = _params(avatar)
    level = next(k for k in range(len(fr.levels)) if fr.level_size(k) != SIZE)
    frames = fr.render_frames(params, level)
    expected = [fr.to_video_frame(image) for image in fr.render(params, level)]
    assert all((f.height, f.width) == SIZE for f in frames)
    for got, want in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(_frame_i420(got), _frame_i420(want))


def test_render_frames_rgb24_is_render_plus_to_video_frame(avatar: Avatar) -> None:
    fr = FrameRenderer(avatar, SIZE, pixel_format="rgb24")
    params = _params(avatar)
    frames = fr.render_frames(params, 0)
    images = fr.render(params, 0)
    for got, want in zip(frames, images, strict=True):
        assert got.format.name == "rgb24"
        np.testing.assert_array_equal(got.to_ndarray(), want)
