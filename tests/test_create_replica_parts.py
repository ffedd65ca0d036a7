"""Parts of the replica builder that need no clip: colour least squares, extra rig deltas, speaking style."""

from __future__ import annotations

import numpy as np
import pytest

from engines.create.color_fit import fit_colors, frame_geometry, render_and_backproject, static_plate
from engines.create.personalise import with_extra_deltas
from engines.create.speaking_style import GAIN_CHANNELS, measure_style, reference_mouth_max
from engines.splat.avatar import DEFAULT_CHANNELS, Avatar
from engines.splat.rig import pose
from engines.splat.synthetic import make_test_avatar


@pytest.fixture(scope="module")
def small() -> Avatar:
    return make_test_avatar(2000, seed=3)


def test_colour_kernel_draws_what_the_rasteriser_draws(small: Avatar) -> None:
    """The least-squares kernel's forward pass equals the real-time rasteriser (to one uint8 step)."""
    from engines.splat.render import render

    params = small.params({"jawOpen": 0.4, "headYaw": 0.08})
    in_plate, plate = static_plate(small)
    geo = frame_geometry(small, params[0], ~in_plate)
    h, w = small.camera.height, small.camera.width
    pred, _, _ = render_and_backproject(
        geo, small.colors, plate, np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.float32)
    )
    ref = render(small, params)[0].astype(np.float32) / 255.0
    # the plate is stored as uint8 steps, then the front is composited over it: ≤ 2 steps apart
    assert np.abs(pred - ref).max() <= 2.0 / 255.0 + 1e-6


def test_backprojection_is_the_transpose_of_rendering(small: Avatar) -> None:
    """⟨A c, r⟩ = ⟨c, Aᵀ r⟩ for random colours c and residual images r (no background)."""
    rng = np.random.default_rng(0)
    in_plate, _ = static_plate(small)
    geo = frame_geometry(small, small.neutral(1)[0], ~in_plate)
    h, w = small.camera.height, small.camera.width
    zeros = np.zeros((h, w, 3), np.float32)
    c = rng.uniform(0, 1, (small.count, 3)).astype(np.float32)
    c[in_plate] = 0.0
    r = rng.normal(size=(h, w, 3)).astype(np.float32)
    pred, _, _ = render_and_backproject(geo, c, zeros, zeros, np.zeros((h, w), np.float32))
    # Aᵀ(M(A·0 − (−r))) = Aᵀ r: back-project with colours 0 and target −r
    _, atr, _ = render_and_backproject(geo, np.zeros_like(c), zeros, -r, np.ones((h, w), np.float32))
    lhs = float((pred.astype(np.float64) * r).sum())
    rhs = float((c.astype(np.float64) * atr).sum())
    assert lhs == pytest.approx(rhs, rel=1e-4)


def test_fit_colors_recovers_known_colours(small: Avatar) -> None:
    """Frames drawn with the true colours; starting from wrong ones the fit gets back to them."""
    from engines.splat.render import render

    truth = small.colors.copy()
    params = np.concatenate(
        [
            small.params({"jawOpen": j, "headYaw": y})
            for j, y in ((0.0, 0.0), (0.5, 0.05), (0.2, -0.06), (0.8, 0.0))
        ]
    )
    frames = render(small, params)
    rng = np.random.default_rng(1)
    start = small.colors.copy()
    in_plate, _ = static_plate(small)
    start[~in_plate] = np.clip(truth[~in_plate] + rng.normal(0, 0.15, (int((~in_plate).sum()), 3)), 0, 1)
    wrong = Avatar(**{**small.__dict__, "colors": start.astype(np.float32)})
    colors, stats = fit_colors(wrong, params, frames, iters=20)
    assert stats["rms_after"] < 0.25 * stats["rms_before"]
    assert stats["rms_after"] < 0.01
    # Gaussians that the frames show clearly get their colour back
    seen = ~in_plate & (np.abs(colors - truth).max(axis=1) < 0.05)
    assert seen.sum() > 0.6 * (~in_plate).sum()


def test_extra_deltas_add_to_a_channel(small: Avatar) -> None:
    c = small.channel_index("jawOpen")
    idx, _before = small.rig.channel_deltas(c)
    target = np.array([int(idx[0]), small.count - 1])
    bump = np.array([[0.0, 0.001, 0.0], [0.002, 0.0, 0.0]])
    out = with_extra_deltas(small, {c: (target, bump)})
    moved = (
        pose(out, out.params({"jawOpen": 1.0})).means[0]
        - pose(small, small.params({"jawOpen": 1.0})).means[0]
    )
    np.testing.assert_allclose(moved[target], bump, atol=1e-6)
    others = np.setdiff1d(np.arange(small.count), target)
    assert np.abs(moved[others]).max() < 1e-7
    # the other channels are untouched
    s = small.channel_index("mouthFunnel")
    np.testing.assert_array_equal(out.rig.channel_deltas(s)[0], small.rig.channel_deltas(s)[0])


def test_speaking_style_from_known_motion() -> None:
    """Blinks, sway and mouth amplitude drawn with known values come back in the metadata."""
    fps, seconds = 25.0, 60.0
    t = np.arange(int(fps * seconds)) / fps
    ch = DEFAULT_CHANNELS
    params = np.zeros((len(t), len(ch)), np.float32)
    col = {c: i for i, c in enumerate(ch)}
    # 15 blinks a minute, 4 frames each
    for start in np.arange(1.0, seconds, 4.0):
        k = int(start * fps)
        params[k : k + 4, col["eyeBlinkLeft"]] = params[k : k + 4, col["eyeBlinkRight"]] = 1.0
    # yaw sway: 3° amplitude at 0.6 Hz (RMS 3/√2); pitch sway 1° at 1.5 Hz
    params[:, col["headYaw"]] = np.radians(3.0) * np.sin(2 * np.pi * 0.6 * t)
    params[:, col["headPitch"]] = np.radians(1.0) * np.sin(2 * np.pi * 1.5 * t)
    # speech: jaw moving 0..0.3 at 4 Hz in the first 40 s, closed after
    talk = t < 40.0
    params[talk, col["jawOpen"]] = 0.15 + 0.15 * np.sin(2 * np.pi * 4.0 * t[talk])
    style = measure_style(ch, params, t, speaking=talk)
    assert style["version"] == 1 and style["speech_from"] == "audio"
    assert style["blinks"] == 15 and style["blink_rate_per_min"] == pytest.approx(15.0, rel=0.05)
    assert style["head_sway_rms_deg"]["yaw"] == pytest.approx(3.0 / np.sqrt(2), rel=0.1)
    assert style["head_sway_spectrum"]["peak_hz"]["yaw"] == pytest.approx(0.6, abs=0.05)
    assert style["head_sway_spectrum"]["peak_hz"]["pitch"] == pytest.approx(1.5, abs=0.05)
    ref = reference_mouth_max()["jawOpen"]
    assert style["mouth_p95"]["jawOpen"] == pytest.approx(0.30, abs=0.01)
    assert style["mouth_gain"]["jawOpen"] == pytest.approx(0.30 / ref, rel=0.05)
    assert set(style["mouth_gain"]) <= set(GAIN_CHANNELS)
    assert style["speaking_fraction"] == pytest.approx(40 / 60, abs=0.01)
