"""``splatcast say``: script (or audio) to an H.264/AAC MP4, offline, through the same AvatarStream.

Text goes through the bundled Piper voice, whose alignments drive the mouth;
an audio file (``--audio``, any format FFmpeg reads) goes through the a2v
network. With ``expressiveness`` > 0 each sentence of the text gets its
emotion from its words (``[happy]``-style tags are honoured and never spoken)
and the voice's emphasis moves brows and head; ``--emotion`` holds one
emotion for the whole clip instead. Frames are rendered as fast as the machine allows (no clock), muxed
with PyAV: video pts come from the audio sample clock exactly as in the live
server, so the file is in sync by construction.
"""

from __future__ import annotations

import fractions
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from engines import assets
from realtime.media.stream import VIDEO_CLOCK_RATE, AvatarStream, FrameJob
from realtime.settings import Settings

logger = logging.getLogger(__name__)

LEAD_IN_S = 0.3  # idle before the first word
TAIL_S = 0.6  # idle after the last word, so the mouth visibly closes
BATCH = 8


class SayError(RuntimeError):
    """The input cannot be rendered (bad audio file, empty text, unwritable output)."""


@dataclass(frozen=True)
class SayResult:
    path: Path
    frames: int
    duration_s: float
    render_s: float
    mouth_open: tuple[float, ...] = ()  # per frame: jawOpen of the lip-sync source (bench reference)

    @property
    def realtime_factor(self) -> float:
        return self.render_s / self.duration_s if self.duration_s else 0.0


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode any audio file to mono float32 at its own sample rate."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise SayError(f"{path} has no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or 0)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            parts = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except (av.error.FFmpegError, OSError) as exc:
        raise SayError(f"cannot read audio from {path}: {exc}") from exc
    if not parts or rate <= 0:
        raise SayError(f"{path} holds no audio samples")
    return np.concatenate(parts).astype(np.float32), rate


def feed_text(stream: AvatarStream, text: str) -> float:
    """Synthesise ``text`` with Piper into the stream, each sentence with its emotion; seconds of speech."""
    from engines.expression.annotate import annotate
    from engines.expression.text_emotion import ReplyEmotion, TextEmotionClassifier
    from engines.tts import PiperTTS, split_sentences

    clean, sentences = annotate(text, ReplyEmotion(TextEmotionClassifier()))
    if not clean:
        raise SayError("the text has nothing to say once its emotion tags are removed")
    tts = PiperTTS.load()
    seconds = 0.0
    for sentence, emotion in zip(split_sentences(clean), sentences, strict=True):
        for i, chunk in enumerate(tts.synthesize(sentence)):
            stream.push_tts_audio(
                chunk.pcm, chunk.sample_rate, chunk.alignments, emotion=emotion.cue if i == 0 else None
            )
            seconds += chunk.duration_s
    stream.end_utterance()
    return seconds


def feed_audio(stream: AvatarStream, pcm: np.ndarray, rate: int) -> float:
    step = max(1, rate // 10)  # 100 ms chunks, as a streaming TTS would deliver them
    for i in range(0, len(pcm), step):
        stream.push_tts_audio(pcm[i : i + step], rate)
    stream.end_utterance()
    return len(pcm) / rate


def jobs(stream: AvatarStream, lead_in_frames: int, tail_frames: int) -> Iterator[FrameJob]:
    """Frames until the utterance has played out, plus the tail."""
    for _ in range(lead_in_frames):
        yield stream.next_frame_job()
    while stream.pending_utterances:
        yield stream.next_frame_job()
    for _ in range(tail_frames):
        yield stream.next_frame_job()


def render_mp4(
    settings: Settings,
    output: Path,
    text: str | None = None,
    audio: Path | None = None,
    emotion: str | None = None,
    progress: bool = True,
    expressiveness: float | None = None,
) -> SayResult:
    """Render one utterance to ``output`` (H.264 + AAC in MP4).

    ``emotion``: hold this one for the whole clip (None: each sentence's own when expressive);
    ``expressiveness``: None takes ``settings.expressiveness``.
    """
    from engines.splat.avatar import load_avatar
    from engines.splat.render import render
    from realtime.media.engine import load_lip_model

    if (text is None) == (audio is None):
        raise SayError("give either TEXT or --audio FILE")
    if text is not None and not text.strip():
        raise SayError("the text is empty")
    avatar = load_avatar(Path(settings.avatar) if settings.avatar else assets.default_avatar())
    lip_model = load_lip_model(settings) if audio is not None else None
    if audio is not None and lip_model is None:
        raise SayError("--audio needs the a2v network (engines/data/a2v.onnx); see `splatcast doctor`")
    fps, size = settings.fps, settings.size
    stream = AvatarStream.for_avatar(
        avatar,
        fps,
        lip_model,
        seed=0,
        expressiveness=settings.expressiveness if expressiveness is None else expressiveness,
    )
    if emotion is not None:
        stream.set_emotion(emotion, 1.0)
    # lead-in frames first, so speech starts LEAD_IN_S in; the lip path has no lookahead to wait for
    lead_in = round(LEAD_IN_S * fps)
    head = [stream.next_frame_job() for _ in range(lead_in)]
    if text is not None:
        speech_s = feed_text(stream, text)
    else:
        assert audio is not None
        pcm, rate = read_audio(audio)
        speech_s = feed_audio(stream, pcm, rate)
    expected = lead_in + int(np.ceil(speech_s * fps)) + round(TAIL_S * fps) + 1

    output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    frames = 0
    mouth_open: list[float] = []
    try:
        container = av.open(str(output), mode="w")
    except (av.error.FFmpegError, OSError) as exc:
        raise SayError(f"cannot write {output}: {exc}") from exc
    with container:
        vstream = container.add_stream("libx264", rate=fps)
        vstream.width = vstream.height = size
        vstream.pix_fmt = "yuv420p"
        vstream.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        vstream.options = {"crf": "20", "preset": "veryfast"}
        astream = container.add_stream("aac", rate=stream.sample_rate)
        astream.layout = "mono"
        bar = tqdm(total=expected, unit="frame", desc="rendering", disable=not progress, file=sys.stderr)
        batch: list[FrameJob] = []

        def flush() -> None:
            nonlocal frames
            if not batch:
                return
            images = render(
                avatar,
                np.stack([j.params for j in batch]),
                size=(size, size),
                backend=settings.render_backend,
            )
            for job, image in zip(batch, images, strict=True):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = job.pts
                frame.time_base = vstream.time_base
                container.mux(vstream.encode(frame))
                aframe = av.AudioFrame.from_ndarray(job.audio.reshape(1, -1), format="s16", layout="mono")
                aframe.sample_rate = stream.sample_rate
                aframe.pts = job.index * stream.samples_per_frame
                aframe.time_base = fractions.Fraction(1, stream.sample_rate)
                container.mux(astream.encode(aframe))
                mouth_open.append(job.mouth_open)
                frames += 1
            bar.update(len(batch))
            batch.clear()

        for job in (*head, *jobs(stream, 0, round(TAIL_S * fps))):
            batch.append(job)
            if len(batch) == BATCH:
                flush()
        flush()
        container.mux(vstream.encode(None))
        container.mux(astream.encode(None))
        bar.close()
    render_s = time.perf_counter() - t0
    return SayResult(output, frames, frames / fps, render_s, tuple(mouth_open))
