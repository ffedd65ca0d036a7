"""splatcast say: text or audio to an in-sync H.264/AAC MP4 through AvatarStream (real Piper, real a2v)."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np
import pytest

from engines.splat.avatar import save_avatar
from engines.splat.synthetic import make_test_avatar
from realtime.media.offline import SayError, render_mp4
from realtime.settings import load_settings


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("say") / "synthetic.safetensors"
    avatar = make_test_avatar()
    save_avatar(avatar, path)
    return load_settings(flags={"avatar": str(path), "size": 128}, env={})


def probe(path: Path) -> tuple[list[np.ndarray], np.ndarray, float, float]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        assert v.codec_context.width == v.codec_context.height == 128
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
        rate = c.streams.audio[0].codec_context.sample_rate
    return frames, audio, len(frames) / 25.0, len(audio) / rate


def test_text_to_mp4_in_sync(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "hello.mp4"
    result = render_mp4(settings, out, text="Hello there. Nice to meet you!", progress=False)
    frames, audio, video_s, audio_s = probe(out)
    assert result.frames == len(frames)
    assert abs(video_s - audio_s) < 0.05  # same length, within AAC priming/padding
    # silence in the lead-in, speech after it
    lead = int(0.3 * 48_000)
    assert np.abs(audio[: lead - 2048]).max() < 0.01
    assert np.sqrt(np.mean(audio[lead : lead + 48_000] ** 2)) > 0.02
    # the face changes while speaking, not during the lead-in
    diffs = [float(np.abs(b.astype(int) - a.astype(int)).mean()) for a, b in itertools.pairwise(frames)]
    assert max(diffs[10:-10]) > 3 * max(max(diffs[:5]), 0.05)


def test_audio_file_to_mp4_through_a2v(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from engines.tts import PiperTTS

    chunk = next(iter(PiperTTS.load().synthesize("The network moves the mouth for any voice.")))
    wav = tmp_path / "voice.wav"
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=chunk.sample_rate)
        s.layout = "mono"
        f = av.AudioFrame.from_ndarray(
            (chunk.pcm * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        f.sample_rate = chunk.sample_rate
        c.mux(s.encode(f))
        c.mux(s.encode(None))
    out = tmp_path / "dub.mp4"
    result = render_mp4(settings, out, audio=wav, progress=False)
    frames, _audio, video_s, audio_s = probe(out)
    assert abs(video_s - (0.3 + chunk.duration_s + 0.6)) < 0.2
    assert abs(video_s - audio_s) < 0.05
    assert result.frames == len(frames)


def test_bad_inputs_are_clear(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SayError, match="either"):
        render_mp4(settings, tmp_path / "x.mp4", text="hi", audio=tmp_path / "a.wav", progress=False)
    with pytest.raises(SayError, match="empty"):
        render_mp4(settings, tmp_path / "x.mp4", text="   ", progress=False)
    with pytest.raises(SayError, match="cannot read audio"):
        render_mp4(settings, tmp_path / "x.mp4", audio=tmp_path / "missing.wav", progress=False)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(SayError):
        render_mp4(settings, tmp_path / "x.mp4", audio=junk, progress=False)
