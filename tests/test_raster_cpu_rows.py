"""The CPU composite leaves out half-rows whose pixels have all finished, and draws the same picture.

A run of a Gaussian inside a tile skips the 8-pixel half-rows at either end whose pixels had all
reached T < 1e-4 at the last check (see :mod:`engines.splat.raster_cpu`). These scenes put opaque
stacks in front of parts of tiles, so that many runs behind them are cut, and compare the result
with the reference rasteriser (same tolerances as tests/test_raster_backends.py): a cut that left
out a row with a live pixel would lose that Gaussian's colour there.

A run is blended as 16-lane pairs of half-rows, an odd last row as a pair whose second row is
masked (AVX-512), or one 8-lane half-row at a time (AVX2; ``raster_cpu.BLEND_PAIRS`` picks for the
machine): the kernel-level test checks that a run changes exactly its own pixels in both shapes, and
both draw the same frames (the float32 arithmetic per pixel is the same; LLVM may fuse a multiply-add
in one shape and not the other, so a rare 8-bit level differs by one).
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.splat import raster_cpu
from engines.splat.raster_cpu import (
    _TILE_B,
    _TILE_BUF,
    _TILE_G,
    _TILE_R,
    _TILE_T,
    HALF,
    TILE,
    _blend_rows,
    _finished_rows,
)
from engines.splat.raster_reference import rasterize_reference
from engines.splat.rasterize import rasterize
from engines.splat.types import Camera, PosedGaussians
from tests.test_raster_backends import assert_close_to_reference


def test_finished_rows_marks_half_rows_whose_pixels_all_stopped() -> None:
    trans = np.ones(TILE * TILE, dtype=np.float32)
    done = np.zeros(2 * TILE, dtype=np.bool_)
    # half 0, row 3: every pixel finished; half 1, row 5: all but one pixel finished
    trans[3 * HALF : 4 * HALF] = 5e-5
    start = (TILE + 5) * HALF
    trans[start : start + HALF] = 0.0
    trans[start + 6] = 2e-4
    assert not _finished_rows(trans, done)
    assert done.tolist() == [i == 3 for i in range(2 * TILE)]
    trans[:] = 9e-5
    assert _finished_rows(trans, done)
    assert done.all()


@pytest.mark.parametrize("pairs", [True, False], ids=["16-lane-pairs", "8-lane-half-rows"])
def test_a_run_blends_exactly_its_own_rows(pairs: bool) -> None:
    """Runs of 1-5 half-rows (odd ones end in a masked pair), in both halves and at the tile's last row
    (whose masked partner lies in the padding): every pixel of the run is blended as the Gaussian's
    α says, every other value in the buffer (all four planes, the padding) stays bit for bit."""
    rng = np.random.default_rng(7)
    f32 = np.float32
    ca, cb, cc, opacity = 0.05, 0.01, 0.04, 0.9  # a wide, slightly tilted Gaussian: α ≥ 1/255 over the run
    colour = (f32(0.2), f32(0.5), f32(0.9))
    for rows in range(1, 6):
        for first in (0, 3, TILE - rows, TILE + 2, 2 * TILE - rows):  # half-row index (half·TILE + row)
            buf = rng.uniform(0.2, 1.0, _TILE_BUF).astype(np.float32)
            before = buf.copy()
            du0, dv0 = -3.5, -1.25
            _blend_rows(
                buf,
                first * HALF,
                rows,
                f32(du0),
                f32(dv0),
                f32(ca),
                f32(cb),
                f32(cc),
                f32(opacity),
                *colour,
                pairs,
            )
            run = np.arange(first * HALF, (first + rows) * HALF)
            du = du0 + run % HALF
            dv = dv0 + (run // HALF - first)
            d = ca * du * du + 2 * cb * du * dv + cc * dv * dv
            alpha = np.minimum(opacity * np.exp(-d / 2), 0.99)
            assert (d <= 9).all() and (alpha >= 1 / 255).all()
            t_old = before[_TILE_T + run]
            np.testing.assert_allclose(buf[_TILE_T + run], t_old * (1 - alpha), rtol=1e-5)
            for plane, c in zip((_TILE_R, _TILE_G, _TILE_B), colour, strict=True):
                np.testing.assert_allclose(
                    buf[plane + run], before[plane + run] + c * alpha * t_old, rtol=1e-5
                )
            untouched = np.ones(_TILE_BUF, dtype=bool)
            for plane in (_TILE_R, _TILE_G, _TILE_B, _TILE_T):
                untouched[plane + run] = False
            assert np.array_equal(buf[untouched], before[untouched]), (rows, first)


def _stack_scene(seed: int) -> PosedGaussians:
    """Opaque, flat, elongated splats in stacks at a few depths (front stacks cover parts of tiles),
    and small splats of every opacity behind and between them."""
    rng = np.random.default_rng(seed)
    n_wall, n_small = 60, 500
    n = n_wall + n_small
    means = np.empty((1, n, 3), dtype=np.float32)
    # walls: a few horizontal bands of opaque splats at depths 1.0-1.2 (several layers each)
    means[0, :n_wall, 0] = rng.uniform(-0.5, 0.5, n_wall)
    means[0, :n_wall, 1] = rng.choice([-0.3, 0.05, 0.35], n_wall) + rng.uniform(-0.03, 0.03, n_wall)
    means[0, :n_wall, 2] = rng.uniform(1.0, 1.2, n_wall)
    means[0, n_wall:, :2] = rng.uniform(-0.6, 0.6, (n_small, 2))
    means[0, n_wall:, 2] = rng.uniform(0.8, 2.5, n_small)
    q = rng.normal(size=(1, n, 4))
    q[0, :n_wall] = [1.0, 0.0, 0.0, 0.0]
    scales = np.empty((1, n, 3))
    scales[0, :n_wall] = [0.2, 0.04, 0.005]
    scales[0, n_wall:] = rng.uniform(0.004, 0.05, (n_small, 3))
    opac = np.empty((1, n))
    opac[0, :n_wall] = 0.99
    opac[0, n_wall:] = rng.uniform(0.05, 1.0, n_small)
    return PosedGaussians(
        means=means,
        quats=(q / np.linalg.norm(q, axis=-1, keepdims=True)).astype(np.float32),
        scales=scales.astype(np.float32),
        opacities=opac.astype(np.float32),
        colors=rng.uniform(0.0, 1.0, (1, n, 3)).astype(np.float32),
    )


def test_runs_cut_at_finished_rows_match_the_reference() -> None:
    cam = Camera(fx=120.0, fy=120.0, cx=64.0, cy=48.0, width=128, height=96)
    bg = np.array([0.1, 0.6, 0.3], dtype=np.float32)
    for seed in (3, 4):
        g = _stack_scene(seed)
        ref_rgb, ref_alpha = rasterize_reference(g, cam, bg)
        rgb, alpha = rasterize(g, cam, bg, backend="cpu", return_alpha=True)
        assert_close_to_reference(rgb, alpha, ref_rgb, ref_alpha)
        # the walls finish their pixels (so rows are cut there) and something shows between them
        assert (ref_alpha > 0.9999).mean() > 0.1
        assert (ref_alpha < 0.9).mean() > 0.1


def test_both_blend_shapes_draw_the_same_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    cam = Camera(fx=120.0, fy=120.0, cx=64.0, cy=48.0, width=128, height=96)
    bg = np.array([0.1, 0.6, 0.3], dtype=np.float32)
    g = _stack_scene(5)
    drawn = {}
    for pairs in (True, False):
        monkeypatch.setattr(raster_cpu, "BLEND_PAIRS", pairs)
        rgb, alpha = raster_cpu.rasterize_cpu(g, cam, bg)
        drawn[pairs] = (rgb, alpha, raster_cpu.rasterize_cpu_i420(g, cam, bg))
    assert drawn[True][0].std() > 10  # a picture, not a flat colour
    for name in (0, 2):  # RGB, I420: 8-bit levels
        diff = np.abs(drawn[True][name].astype(np.int16) - drawn[False][name].astype(np.int16))
        assert diff.max() <= 1 and np.count_nonzero(diff) <= diff.size // 1000
    np.testing.assert_allclose(drawn[True][1], drawn[False][1], atol=1e-6)
