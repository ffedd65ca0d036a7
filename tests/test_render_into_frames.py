"""Frames drawn straight into video frames' planes (Renderer.render_i420_into, FrameRenderer.render_frames).

The server's render worker hands PyAV no array to copy: the rasteriser writes each frame's I420 into an
``av.VideoFrame``'s own planes (a pooled frame that nothing holds any more, or a new one). The pictures must be the ones :meth:`Renderer.render_i420` returns,
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


def test_render_frames_draws_again_only_into_frames_nobody_holds(avatar: Avatar) -> None:
    """The frame pool: a frame dropped by everyone takes the next picture (no new 384 kB mapping to
    page-fault in per frame); one still held, even by a single plane view, is never drawn into."""
    fr = FrameRenderer(avatar, SIZE)
    params = _params(avatar)
    expected = fr._splat.render_i420(params, SIZE)
    held = fr.render_frames(params[:1], 0)[0]
    dropped = fr.render_frames(params[:1], 0)[0]
    dropped_id = id(dropped)
    del dropped
    again = fr.render_frames(params[1:], 0)[0]
    assert id(again) == dropped_id and again is not held
    np.testing.assert_array_equal(_frame_i420(again), expected[1])
    np.testing.assert_array_equal(_frame_i420(held), expected[0])
    # a plane of a frame kept alone (the frame object itself dropped) still holds the frame
    plane = again.planes[0]
    del again
    other = fr.render_frames(params[:1], 0)[0]
    assert id(other) != dropped_id
    np.testing.assert_array_equal(np.frombuffer(memoryview(plane), np.uint8)[:8], expected[1][0, :8])
    assert fr._pool.reused == 1


def test_render_frames_when_every_pooled_frame_is_held(avatar: Avatar) -> None:
    """More frames held than the pool keeps: new frames, each with its own picture, none reused."""
    fr = FrameRenderer(avatar, SIZE)
    params = _params(avatar)
    expected = fr._splat.render_i420(params, SIZE)
    kept = [fr.render_frames(params[f % 2 : f % 2 + 1], 0)[0] for f in range(fr._pool.keep + 3)]
    assert len({id(f) for f in kept}) == len(kept)
    assert len(fr._pool._frames) == fr._pool.keep and fr._pool.reused == 0
    for f, frame in enumerate(kept):
        np.testing.assert_array_equal(_frame_i420(frame), expected[f % 2])


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
