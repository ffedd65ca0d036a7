"""render(): boundary checks, and every backend against the reference on test avatars × poses × sizes."""

from __future__ import annotations

import numpy as np
import pytest
from test_raster_backends import assert_close_to_reference

from engines.splat.avatar import Avatar
from engines.splat.render import Renderer, RenderError, render
from engines.splat.synthetic import make_test_avatar

POSES: dict[str, dict[str, float]] = {
    "neutral": {},
    "jaw_open": {"jawOpen": 0.8},
    "pucker_blink": {"mouthPucker": 0.7, "eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0},
    "head_turned": {"headYaw": 0.25, "headPitch": -0.12, "jawOpen": 0.3},
}
SIZES = [(64, 48), (96, 160)]


@pytest.fixture(scope="module")
def avatars() -> list[Avatar]:
    return [make_test_avatar(1500, seed=0), make_test_avatar(2500, seed=3)]


@pytest.fixture(scope="module")
def reference_renders(
    avatars: list[Avatar],
) -> dict[tuple[int, tuple[int, int]], tuple[np.ndarray, np.ndarray]]:
    """Reference renders of every (avatar, size), computed once (the reference is slow)."""
    return {
        (which, size): render(
            avatars[which], _batch(avatars[which]), size, backend="reference", return_alpha=True
        )
        for which in range(len(avatars))
        for size in SIZES
    }


def _batch(avatar: Avatar) -> np.ndarray:
    return np.concatenate([avatar.params(v) for v in POSES.values()])  # [4, C]


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("which", [0, 1])
def test_render_backend_matches_reference(
    avatars: list[Avatar],
    reference_renders: dict[tuple[int, tuple[int, int]], tuple[np.ndarray, np.ndarray]],
    backend: str,
    size: tuple[int, int],
    which: int,
) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    avatar = avatars[which]
    params = _batch(avatar)
    ref_rgb, ref_alpha = reference_renders[(which, size)]
    rgb, alpha = render(avatar, params, size, backend=backend, return_alpha=True)
    assert rgb.shape == (len(POSES), *size, 3)
    assert_close_to_reference(rgb, alpha, ref_rgb, ref_alpha)
    # the poses really differ (the rig reached the rasteriser)
    assert not np.array_equal(rgb[0], rgb[1])
    assert not np.array_equal(rgb[0], rgb[3])


def test_render_opens_the_mouth_where_the_metadata_says(avatars: list[Avatar]) -> None:
    avatar = avatars[0]
    x0, y0, x1, y1 = avatar.metadata["mouth_box"]
    shut = render(avatar, avatar.params({}), (512, 512))[0].astype(np.float32)
    open_ = render(avatar, avatar.params({"jawOpen": 1.0}), (512, 512))[0].astype(np.float32)
    box = (slice(int(y0), int(y1) + 1), slice(int(x0), int(x1) + 1))
    change_in_box = np.abs(open_[box] - shut[box]).mean()
    change_elsewhere = np.abs(open_ - shut).mean()
    assert change_in_box > 4 * change_elsewhere


def test_render_default_size_and_dtype(avatars: list[Avatar]) -> None:
    out = render(avatars[0], avatars[0].neutral(2))
    assert out.shape == (2, 512, 512, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], out[1])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("wrong_c", "shape"),
        ("list", "numpy float32 array"),
        ("float64", "float32"),
        ("nan", "NaN"),
        ("1d", "shape"),
    ],
)
def test_render_rejects_bad_params(avatars: list[Avatar], params: object, message: str) -> None:
    avatar = avatars[0]
    c = len(avatar.channels)
    if params == "wrong_c":
        params = np.zeros((1, c - 1), dtype=np.float32)
    elif params == "list":
        params = [[0.0] * c]
    elif params == "float64":
        params = np.zeros((1, c), dtype=np.float64)
    elif params == "nan":
        p = avatar.neutral(1)
        p[0, 0] = np.nan
        params = p
    elif params == "1d":
        params = np.zeros(c, dtype=np.float32)
    with pytest.raises(RenderError, match=message):
        render(avatar, params, (64, 64))  # type: ignore[call-overload]


@pytest.mark.parametrize("size", [(0, 64), (64, 5000), (64,), (64.0, 64), "512", (True, 64)])
def test_render_rejects_bad_size(avatars: list[Avatar], size: object) -> None:
    with pytest.raises(RenderError, match="size"):
        render(avatars[0], avatars[0].neutral(1), size)  # type: ignore[call-overload]


def test_render_rejects_unknown_backend_and_lod(avatars: list[Avatar]) -> None:
    with pytest.raises(RenderError, match="backend"):
        render(avatars[0], avatars[0].neutral(1), (64, 64), backend="cuda")
    with pytest.raises(RenderError, match="lod"):
        render(avatars[0], avatars[0].neutral(1), (64, 64), lod=1)


@pytest.mark.parametrize("size", SIZES)
def test_renderer_with_static_plate_matches_reference(
    avatars: list[Avatar],
    reference_renders: dict[tuple[int, tuple[int, int]], tuple[np.ndarray, np.ndarray]],
    size: tuple[int, int],
) -> None:
    """Renderer draws the static layer once as a plate; frames must still match the reference."""
    avatar = avatars[0]
    renderer = Renderer(avatar)
    rgb, alpha = renderer.render(_batch(avatar), size, return_alpha=True)
    assert renderer.plate_frames == len(POSES)  # the plate was used, not the fallback
    ref_rgb, ref_alpha = reference_renders[(0, size)]
    assert_close_to_reference(rgb, alpha, ref_rgb, ref_alpha)
    # the second call reuses the plate and gives the same frames
    np.testing.assert_array_equal(renderer.render(_batch(avatar), size), rgb)


def test_renderer_falls_back_when_the_static_layer_is_not_behind(avatars: list[Avatar]) -> None:
    import dataclasses

    from engines.splat.avatar import LAYER_STATIC

    avatar = avatars[0]
    means = avatar.means.copy()
    static = avatar.layers == LAYER_STATIC
    means[np.flatnonzero(static)[:5], 2] = 0.5  # a few static splats in front of the face
    moved = dataclasses.replace(avatar, means=means)
    renderer = Renderer(moved)
    params = moved.params({"jawOpen": 0.5})
    out = renderer.render(params, (64, 48))
    assert renderer.plate_frames == 0
    np.testing.assert_array_equal(out, render(moved, params, (64, 48)))
