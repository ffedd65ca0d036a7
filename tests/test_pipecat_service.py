"""SplatAvatarService in Pipecat's own test harness (``pipecat.tests.utils.run_test``), fed real Piper audio.

Each test runs the service in a real pipeline, in real time (the service owns
its frame clock), on a small synthetic avatar, and checks what comes out in
media time: image frames at the configured fps, pts on the audio clock, the
TTS audio re-emitted whole and never ahead of its image, a closed mouth when
idle and a moving one in speech, and an interruption that silences the audio
and closes the mouth within 150 ms.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
)
from pipecat.tests.utils import SleepFrame, run_test

from engines.splat.synthetic import write_synthetic_avatar
from engines.tts import PiperTTS, SpeechChunk
from realtime.conversation.services import AlignedTTSAudioRawFrame
from realtime.media.engine import Engine
from realtime.media.stream import AvatarStream, FrameJob
from realtime.pipecat.service import SplatAvatarError, SplatAvatarService
from realtime.pipecat.transport import AudioClockVideoTrack
from realtime.settings import Settings

pytestmark = pytest.mark.slow

FPS = 25
SIZE = 96
FRAME_NS = 1_000_000_000 // FPS
OUT_RATE = 48_000
SPF = OUT_RATE // FPS  # output samples per video frame
TEXT = "Hello there. I am a splat avatar, and my lips move with my voice."


@pytest.fixture(scope="module")
def avatar_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[int, int, int, int]]:
    path = tmp_path_factory.mktemp("avatar") / "synthetic.safetensors"
    x0, y0, x1, y1 = write_synthetic_avatar(path)
    box = (int(x0 * SIZE), int(y0 * SIZE), math.ceil(x1 * SIZE), math.ceil(y1 * SIZE))
    return path, box


@pytest.fixture(scope="module")
def engine(avatar_file: tuple[Path, tuple[int, int, int, int]]) -> Iterator[Engine]:
    eng = Engine.load(Settings(avatar=avatar_file[0], size=SIZE, fps=FPS))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def speech() -> list[SpeechChunk]:
    """Real Piper speech (22 050 Hz) with its phoneme alignments, one chunk per sentence."""
    return list(PiperTTS.load().synthesize(TEXT))


def _pcm16(chunk: SpeechChunk) -> np.ndarray:
    return (np.clip(chunk.pcm, -1.0, 1.0) * 32767.0).astype(np.int16)  # [N]


def aligned_frames(chunks: Sequence[SpeechChunk], context_id: str) -> list[Frame]:
    """As our Piper service sends them: one aligned frame per sentence."""
    return [
        AlignedTTSAudioRawFrame(
            audio=_pcm16(c).tobytes(),
            sample_rate=c.sample_rate,
            num_channels=1,
            context_id=context_id,
            alignments=c.alignments,
        )
        for c in chunks
    ]


def plain_frames(chunks: Sequence[SpeechChunk], context_id: str, chunk_s: float = 0.1) -> list[Frame]:
    """As any streaming TTS service sends them: 100 ms frames, no alignments."""
    out: list[Frame] = []
    for c in chunks:
        pcm = _pcm16(c)
        step = int(c.sample_rate * chunk_s)
        for i in range(0, len(pcm), step):
            out.append(TTSAudioRawFrame(pcm[i : i + step].tobytes(), c.sample_rate, 1, context_id=context_id))
    return out


def reply(audio: list[Frame], context_id: str) -> list[Frame]:
    return [TTSStartedFrame(context_id=context_id), *audio, TTSStoppedFrame(context_id=context_id)]


def speech_seconds(chunks: Sequence[SpeechChunk]) -> float:
    return sum(len(c.pcm) / c.sample_rate for c in chunks)


async def run_service(engine: Engine, frames: Sequence[Frame]) -> tuple[SplatAvatarService, Sequence[Frame]]:
    service = SplatAvatarService(engine=engine, fps=FPS, size=SIZE)
    down, _ = await run_test(service, frames_to_send=frames)  # Pipecat's defaults: StartFrame passes at once
    return service, down


def images(down: Sequence[Frame]) -> list[OutputImageRawFrame]:
    return [f for f in down if isinstance(f, OutputImageRawFrame)]


def audio_frames(down: Sequence[Frame]) -> list[OutputAudioRawFrame]:
    return [f for f in down if isinstance(f, OutputAudioRawFrame)]


def mouth_luma(frame: OutputImageRawFrame, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    rgb = np.frombuffer(frame.image, np.uint8).reshape(frame.size[1], frame.size[0], 3)  # [H, W, 3]
    return float(rgb[y0:y1, x0:x1].astype(np.float32).mean())


def pts(frame: Frame) -> int:
    assert frame.pts is not None
    return int(frame.pts)


def meta(frame: OutputImageRawFrame) -> dict[str, Any]:
    info: dict[str, Any] = frame.metadata["splatcast"]
    return info


# --------------------------------------------------------------------------------------------- tests


async def test_aligned_speech_frames_pts_audio_and_mouth(
    engine: Engine, speech: list[SpeechChunk], avatar_file: tuple[Path, tuple[int, int, int, int]]
) -> None:
    speech_s = speech_seconds(speech)
    frames = [
        SleepFrame(sleep=0.6),  # idle before the reply
        *reply(aligned_frames(speech, "c1"), "c1"),
        SleepFrame(sleep=speech_s + 0.8),  # the reply plays, then idle again
    ]
    service, down = await run_service(engine, frames)
    imgs = images(down)
    assert len(imgs) >= round((0.6 + speech_s + 0.8) * FPS) - 3

    # images: RGB at the configured size, pts on the audio clock, one frame period apart
    assert all(f.size == (SIZE, SIZE) and f.format == "RGB" and len(f.image) == SIZE * SIZE * 3 for f in imgs)
    stamps = np.array([pts(f) for f in imgs], np.int64)
    assert np.all(np.diff(stamps) == FRAME_NS)
    assert [meta(f)["frame"] for f in imgs] == list(
        range(meta(imgs[0])["frame"], meta(imgs[0])["frame"] + len(imgs))
    )

    # frames at the configured fps over the utterance: its duration × fps, ± 1
    speaking = [meta(f)["speaking"] for f in imgs]
    assert abs(sum(speaking) - speech_s * FPS) <= 1.0 + 1e-9
    first_speech = speaking.index(True)
    last_speech = len(speaking) - 1 - speaking[::-1].index(True)
    assert all(speaking[first_speech : last_speech + 1])  # one contiguous utterance
    assert first_speech >= 10 and last_speech <= len(imgs) - 10  # idle frames before and after

    # audio: one 40 ms slice per image, TTS audio conserved (48 kHz) and never ahead of its image
    auds = audio_frames(down)
    assert all(a.sample_rate == OUT_RATE and a.num_channels == 1 and len(a.audio) == 2 * SPF for a in auds)
    assert len(imgs) - 1 <= len(auds) <= len(imgs)
    tts = [a for a in auds if isinstance(a, TTSAudioRawFrame)]
    assert len(tts) == sum(speaking)
    assert all(a.context_id == "c1" for a in tts)
    out = np.frombuffer(b"".join(a.audio for a in tts), np.int16).astype(np.float32) / 32768.0
    source = np.concatenate([c.pcm for c in speech]).astype(np.float32)
    # AvatarStream clips to full scale before and after resampling (int16 would wrap around)
    ref = np.clip(soxr.resample(np.clip(source, -1, 1), speech[0].sample_rate, OUT_RATE, quality="HQ"), -1, 1)
    assert 0 <= len(out) - len(ref) < SPF  # every sample, padded to whole frames
    np.testing.assert_allclose(out[: len(ref)], ref, rtol=0, atol=0.02)
    silent = [a for a in auds if not isinstance(a, TTSAudioRawFrame)]
    assert all(not any(a.audio) for a in silent)
    order = [f for f in down if isinstance(f, OutputImageRawFrame | OutputAudioRawFrame)]
    seen_images = 0
    audio_index = 0
    for f in order:
        if isinstance(f, OutputImageRawFrame):
            seen_images += 1
        else:
            assert seen_images >= audio_index + 1, "audio left before its image"
            audio_index += 1

    # the held TTSStarted/Stopped frames bracket the re-emitted audio
    kinds = [type(f) for f in down if isinstance(f, TTSStartedFrame | TTSStoppedFrame | TTSAudioRawFrame)]
    assert kinds[0] is TTSStartedFrame and kinds[-1] is TTSStoppedFrame
    assert kinds.count(TTSStartedFrame) == 1 and kinds.count(TTSStoppedFrame) == 1

    # mouth: closed in idle frames, moving in speech frames: the rendered jawOpen, and the pixels (the
    # open inner mouth darkens the mouth box, in step with the jaw)
    box = avatar_file[1]
    luma = np.array([mouth_luma(f, box) for f in imgs])
    jaw = np.array([meta(f)["jaw_open"] for f in imgs])
    fresh = ~np.array([meta(f)["late"] for f in imgs])
    idle = ~np.array(speaking)
    assert np.all(jaw[idle] <= 0.05) and all(meta(f)["mouth_open"] == 0.0 for f in np.array(imgs)[idle])
    talk = slice(first_speech, last_speech + 1)
    assert jaw[talk].max() > 0.3 and np.ptp(jaw[talk]) > 0.3
    closed = float(np.median(luma[idle]))
    assert closed - luma[talk].min() > 5.0, (closed, luma[talk].min())
    assert np.corrcoef(jaw[fresh], luma[fresh])[0, 1] < -0.6, np.corrcoef(jaw[fresh], luma[fresh])
    assert service.stats.interrupts == 0
    assert len(service.stats.first_audio_to_image_s) == 1


async def test_any_tts_audio_goes_through_a2v(engine: Engine, speech: list[SpeechChunk]) -> None:
    if engine.lip_model is None:
        pytest.skip("a2v weights (engines/data/a2v.onnx) not built yet")
    speech_s = speech_seconds(speech[:1])
    frames = [
        SleepFrame(sleep=0.3),
        *reply(plain_frames(speech[:1], "c2"), "c2"),
        SleepFrame(sleep=speech_s + 0.5),
    ]
    _, down = await run_service(engine, frames)
    imgs = images(down)
    speaking = [meta(f)["speaking"] for f in imgs]
    assert abs(sum(speaking) - speech_s * FPS) <= 1.0 + 1e-9
    opens = [meta(f)["mouth_open"] for f in imgs if meta(f)["speaking"]]
    assert max(opens) > 0.2 and min(opens) < 0.1  # opens and closes with the syllables
    tts = [a for a in audio_frames(down) if isinstance(a, TTSAudioRawFrame)]
    assert len(tts) == sum(speaking)


async def test_interruption_silences_audio_and_closes_mouth_within_150ms(
    engine: Engine, speech: list[SpeechChunk], avatar_file: tuple[Path, tuple[int, int, int, int]]
) -> None:
    frames = [
        SleepFrame(sleep=0.6),
        *reply(aligned_frames(speech, "c3"), "c3"),
        SleepFrame(sleep=1.2),  # well into the reply
        InterruptionFrame(),
        SleepFrame(sleep=1.0),
    ]
    service, down = await run_service(engine, frames)
    assert service.stats.interrupts == 1
    cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
    before = [f for f in down[:cut] if isinstance(f, OutputImageRawFrame)]
    assert sum(meta(f)["speaking"] for f in before) > 10  # it was speaking when interrupted
    t_cut = pts(before[-1]) + FRAME_NS  # media time of the interruption (at the latest)

    # audio: nothing of the reply plays 150 ms after the cut; media time of audio j is its position
    auds = audio_frames(down)
    first_pts = pts(images(down)[0])
    late = [a for j, a in enumerate(auds) if first_pts + j * FRAME_NS >= t_cut + 150_000_000]
    assert late and all(not isinstance(a, TTSAudioRawFrame) and not any(a.audio) for a in late)
    assert not any(isinstance(f, TTSAudioRawFrame) for f in down[cut:])
    assert not any(isinstance(f, TTSStoppedFrame) for f in down)  # the interrupted reply never "finished"

    # mouth: back to its idle (closed) look within 150 ms, and still afterwards
    box = avatar_file[1]
    imgs = images(down)
    idle_luma = np.array([mouth_luma(f, box) for f in imgs if not meta(f)["speaking"] and pts(f) < t_cut])
    after = [mouth_luma(f, box) for f in imgs if pts(f) >= t_cut + 150_000_000]
    assert len(after) >= 15
    assert all(abs(m - float(np.median(idle_luma))) <= 3.0 for m in after), (after, idle_luma)
    jaw_after = [meta(f)["jaw_open"] for f in imgs if pts(f) >= t_cut + 150_000_000]
    assert max(meta(f)["jaw_open"] for f in before) > 0.2 and max(jaw_after) < 0.05
    assert service.avatar_stream is not None and service.avatar_stream.state == "listening"


async def test_user_speaking_makes_the_avatar_listen(engine: Engine) -> None:
    frames = [SleepFrame(sleep=0.3), UserStartedSpeakingFrame(), SleepFrame(sleep=0.4)]
    service, down = await run_service(engine, frames)
    assert any(isinstance(f, UserStartedSpeakingFrame) for f in down)  # passed on
    assert service.avatar_stream is not None and service.avatar_stream.state == "listening"
    assert len(images(down)) >= 10 and not any(isinstance(f, TTSAudioRawFrame) for f in down)


async def test_audio_clock_video_track_stamps_frames_with_their_pts() -> None:
    track = AudioClockVideoTrack(8, 4)
    image = bytes(8 * 4 * 3)
    for k in (0, 1, 2, 5):
        frame = OutputImageRawFrame(image=image, size=(8, 4), format="RGB")
        frame.pts = k * FRAME_NS
        track.add_video_frame(frame)
    got = [await asyncio.wait_for(track.recv(), 5) for _ in range(4)]
    assert [f.pts for f in got] == [0, 3600, 7200, 18000]  # 90 kHz, 25 FPS: not aiortc's 3000 steps
    assert all(f.width == 8 and f.height == 4 for f in got)


def test_bad_options_fail_at_construction(tmp_path: Path) -> None:
    with pytest.raises(SplatAvatarError, match="does not exist"):
        SplatAvatarService(avatar=tmp_path / "missing.safetensors")
    with pytest.raises(SplatAvatarError, match="fps"):
        SplatAvatarService(fps=24)
    with pytest.raises(SplatAvatarError, match="render_backend"):
        SplatAvatarService(render_backend="vulkan")


async def test_default_service_passes_pipecats_own_harness_with_default_arguments(
    avatar_file: tuple[Path, tuple[int, int, int, int]],
) -> None:
    """A plain ``SplatAvatarService(...)`` loads and warms up in its constructor, so ``run_test`` with its
    default (short) start timeout passes and the run ends without hanging."""
    service = SplatAvatarService(avatar=avatar_file[0], size=SIZE)
    assert service.warmed_up
    down, _ = await run_test(service, frames_to_send=[SleepFrame(sleep=0.4)])
    assert len(images(down)) >= 5


async def test_warm_false_defers_loading_to_warm_up(engine: Engine) -> None:
    service = SplatAvatarService(engine=engine, fps=FPS, size=SIZE, warm=False)
    assert not service.warmed_up
    await service.warm_up()
    assert service.warmed_up
    down, _ = await run_test(service, frames_to_send=[SleepFrame(sleep=0.3)])
    assert images(down)


async def test_a_failed_pacer_is_reported_upstream_as_an_error(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = AvatarStream.next_frame_job

    def failing(stream: AvatarStream) -> FrameJob:
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("render state corrupted")
        return real(stream)

    monkeypatch.setattr(AvatarStream, "next_frame_job", failing)
    service = SplatAvatarService(engine=engine, fps=FPS, size=SIZE)
    failed: list[BaseException] = []

    @service.event_handler("on_pacer_failed")
    async def _failed(_service: Any, exc: BaseException) -> None:
        failed.append(exc)

    down, up = await run_test(service, frames_to_send=[SleepFrame(sleep=0.8)])
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert len(errors) == 1 and "frame pacer stopped: render state corrupted" in errors[0].error
    assert len(failed) == 1 and isinstance(failed[0], RuntimeError)
    assert len(images(down)) <= 5  # no frames after the failure
