"""``splatcast bench render``: the JSON has the documented keys and sane values; the moving rig moves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.render import moving_rig
from engines.splat.avatar import DEFAULT_CHANNELS
from realtime.cli import main


def test_bench_render_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "bench",
            "render",
            "--avatar",
            "synthetic:800",
            "--size",
            "64",
            "--frames",
            "4",
            "--batch",
            "2",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("backend", "size", "gaussians", "ms_median", "ms_p95", "fps", "batch", "threads", "machine"):
        assert key in result
    assert result["backend"] == "cpu" and result["size"] == 64 and result["batch"] == 2
    assert result["gaussians"] > 800
    assert result["ms_p95"] >= result["ms_median"] > 0
    assert result["fps"] == pytest.approx(2 * 1000 / result["ms_median"], rel=0.01)


def test_moving_rig_varies_jaw_blink_and_head() -> None:
    rig = moving_rig(DEFAULT_CHANNELS, 100)
    assert rig.shape == (100, len(DEFAULT_CHANNELS)) and rig.dtype == np.float32
    for name in ("jawOpen", "eyeBlinkLeft", "headYaw", "mouthPucker"):
        column = rig[:, DEFAULT_CHANNELS.index(name)]
        assert column.max() - column.min() > 0.1, name
