"""realtime.media.audio_level: aiortc's per-packet audio level, computed with numpy, result for result."""

from __future__ import annotations

import aiortc.rtcrtpsender as sender_module
import aiortc.rtp as rtp_module
import numpy as np
import pytest
from av import AudioFrame

from realtime.media.audio_level import audio_level_dbov, restore_aiortc_audio_level, use_numpy_audio_level

AIORTC_LEVEL = rtp_module.compute_audio_level_dbov


def _frame(samples: np.ndarray, layout: str = "mono") -> AudioFrame:
    frame = AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.int16), format="s16", layout=layout)
    frame.sample_rate = 48000
    return frame


def _cases() -> list[tuple[str, np.ndarray, str]]:
    rng = np.random.default_rng(16)
    t = np.arange(960) / 48000.0
    cases = [
        ("silence", np.zeros(960), "mono"),
        ("one lsb", np.r_[np.ones(1), np.zeros(959)], "mono"),
        ("full scale +", np.full(960, 32767), "mono"),
        ("full scale -", np.full(960, -32768), "mono"),  # rms above 0 dBov: clamped to 0
        ("sine -6 dB", np.round(16384 * np.sin(2 * np.pi * 440 * t)), "mono"),
        ("short packet", np.round(rng.standard_normal(480) * 3000), "mono"),
        ("stereo interleaved", np.round(rng.standard_normal(1920) * 500), "stereo"),
    ]
    for amp in (0.3, 3.0, 30.0, 300.0, 3000.0, 30000.0):
        cases.append(
            (f"noise {amp}", np.clip(np.round(rng.standard_normal(960) * amp), -32768, 32767), "mono")
        )
    return cases


@pytest.mark.parametrize(("name", "samples", "layout"), _cases(), ids=[c[0] for c in _cases()])
def test_same_level_as_aiortc(name: str, samples: np.ndarray, layout: str) -> None:
    frame = _frame(samples, layout)
    assert audio_level_dbov(frame) == AIORTC_LEVEL(frame)


def test_levels_span_the_range() -> None:
    """The cases above are not all one value: silence is -127, full scale 0, a quiet noise in between."""
    levels = {name: audio_level_dbov(_frame(s, layout)) for name, s, layout in _cases()}
    assert levels["silence"] == -127
    assert levels["full scale +"] == 0
    assert levels["sine -6 dB"] == -9  # rms of a half-scale sine: 20·log10(0.5/√2) = -9.03
    assert -127 < levels["noise 30.0"] < levels["noise 3000.0"] < 0


def test_installed_where_aiortc_sender_looks_it_up() -> None:
    """The sender calls ``rtp.compute_audio_level_dbov`` through the module at every frame: swapping that
    attribute is what reaches it (an aiortc that imported the function by name would need another hook)."""
    assert sender_module.rtp is rtp_module
    try:
        use_numpy_audio_level()
        use_numpy_audio_level()  # idempotent: the original is remembered once
        assert sender_module.rtp.compute_audio_level_dbov is audio_level_dbov
    finally:
        restore_aiortc_audio_level()
    assert rtp_module.compute_audio_level_dbov is AIORTC_LEVEL
