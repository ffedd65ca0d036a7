"""Speaker similarity (Resemblyzer's encoder in numpy): the network against torch, the mel front end, and
same-voice vs other-voice on real speech; the build worker picks the installed voice closest to a video."""

from __future__ import annotations

import json
import shutil
import subprocess
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines import assets, speaker
from engines.tts import PiperTTS, SynthesisOptions


@pytest.fixture(scope="module")
def piper() -> PiperTTS:
    return PiperTTS.load(threads=1)


def _say(tts: PiperTTS, text: str) -> tuple[np.ndarray, int]:
    chunks = list(tts.synthesize(text, SynthesisOptions()))
    return np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate


def test_numpy_lstm_equals_torch() -> None:
    torch = pytest.importorskip("torch")
    w = speaker._weights()
    lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
    lin = torch.nn.Linear(256, 256)
    with torch.no_grad():
        for layer in range(3):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(lstm, f"{name}_l{layer}").copy_(torch.from_numpy(w[f"lstm_{name}_l{layer}"]))
        lin.weight.copy_(torch.from_numpy(w["linear_weight"]))
        lin.bias.copy_(torch.from_numpy(w["linear_bias"]))
        mels = np.random.default_rng(0).random((3, 160, 40)).astype(np.float32) * 5
        _, (h, _) = lstm(torch.from_numpy(mels))
        r = torch.relu(lin(h[-1]))
        ref = (r / r.norm(dim=1, keepdim=True)).numpy()
    # float32 throughout; the recurrences agree to rounding
    np.testing.assert_allclose(speaker.encode_partials(mels), ref, rtol=0, atol=1e-5)


def test_mel_front_end_puts_a_tone_in_its_band() -> None:
    bank = speaker.mel_filterbank()
    assert bank.shape == (40, 201) and (bank >= 0).all()
    peaks = bank.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all()  # filters rise in frequency
    t = np.arange(16000) / 16000
    mel = speaker.mel_power(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    assert mel.shape == (101, 40)  # centred frames: 1 + 16000 // 160
    band = int(mel[50].argmax())
    freqs = np.linspace(0, 8000, 201)
    assert bank[band, np.argmin(np.abs(freqs - 1000))] > 0  # the strongest band is the one over 1 kHz


def test_same_voice_is_closer_than_another_voice(piper: PiperTTS, tmp_path: Path) -> None:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (scripts/install-system-deps.sh)")
    a = speaker.embed(
        *_say(piper, "The quick brown fox jumps over the lazy dog. I like to talk about the weather.")
    )
    b = speaker.embed(
        *_say(piper, "Peter picked five fresh apples and put them in a big blue bowl on the table.")
    )
    wav = tmp_path / "other.wav"
    subprocess.run(
        [espeak, "-w", str(wav), "Peter picked five fresh apples and put them in a big blue bowl."],
        check=True,
    )
    with wave.open(str(wav)) as w:
        other = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        rate = w.getframerate()
    c = speaker.embed(other, rate)
    assert a.shape == (256,) and abs(float(np.linalg.norm(a)) - 1) < 1e-5
    same, different = speaker.similarity(a, b), speaker.similarity(b, c)
    assert same > 0.85 and different < 0.75 and same - different > 0.2, (same, different)
    best, scores = speaker.closest_voice(b, {"piper": a, "espeak": c})
    assert best == "piper" and scores["piper"] > scores["espeak"]


def test_silence_and_too_little_speech_are_errors() -> None:
    with pytest.raises(speaker.SpeakerError, match="silent"):
        speaker.embed(np.zeros(16000, np.float32), 16000)
    with pytest.raises(speaker.SpeakerError, match="too little"):
        speaker.embed(np.random.default_rng(0).standard_normal(3000).astype(np.float32) * 0.1, 16000)


def _video_with_speech(path: Path, pcm: np.ndarray, rate: int) -> Path:
    import av

    with av.open(str(path), "w", format="mp4") as out:
        v: Any = out.add_stream("libx264", rate=25)
        v.width = v.height = 128
        v.pix_fmt = "yuv420p"
        a: Any = out.add_stream("aac", rate=rate)
        a.layout = "mono"
        frame = av.VideoFrame.from_ndarray(np.full((128, 128, 3), 100, np.uint8), format="rgb24")
        for _ in range(int(len(pcm) / rate * 25)):
            for p in v.encode(frame):
                out.mux(p)
        pcm16 = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)
        step = 1024
        for i in range(0, len(pcm16) - step, step):
            af = av.AudioFrame.from_ndarray(pcm16[None, i : i + step], format="s16", layout="mono")
            af.sample_rate = rate
            for p in a.encode(af):
                out.mux(p)
        for stream in (v, a):
            for p in stream.encode():
                out.mux(p)
    return path


def test_build_worker_picks_the_closest_installed_voice(
    piper: PiperTTS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engines.library.build_worker import match_voice, video_audio

    monkeypatch.setenv("SPLATCAST_CACHE_DIR", str(tmp_path / "cache"))
    pcm, rate = _say(
        piper, "Hello there! This is a recording of me talking for a while, so that you can hear my voice."
    )
    clip = _video_with_speech(tmp_path / "me.mp4", pcm, rate)
    audio = video_audio(clip)
    assert audio is not None and audio[1] == 16000 and abs(len(audio[0]) / 16000 - len(pcm) / rate) < 0.2
    model, config = assets.piper_voice()
    voices = [
        {"id": "en_US-joe-medium", "model": str(model), "config": str(config)},
        {"id": "joe-again", "model": str(model), "config": str(config)},
    ]
    events: list[dict[str, Any]] = []
    match = match_voice(clip, voices, events.append)
    assert match is not None and match["type"] == "voice"
    assert set(match["scores"]) == {"en_US-joe-medium", "joe-again"}
    assert match["similarity"] > 0.8  # the person in the video is this Piper voice
    assert any(e.get("stage") == "voice" for e in events)
    assert len(list((tmp_path / "cache" / "voice-embeddings").glob("*.npy"))) == 2  # cached per voice
    json.dumps(match)
    assert match_voice(clip, voices[:1], events.append) is None  # one voice: nothing to choose
