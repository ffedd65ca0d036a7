"""One avatar build, run as its own process by :class:`engines.library.builds.BuildQueue`.

Usage::

    python -m engines.library.build_worker --source FILE --kind photo|video --out DIR

Writes ``DIR/avatar.safetensors`` and ``DIR/preview.png`` and prints one JSON
object per line on stdout, for the queue to follow::

    {"type": "progress", "stage": "landmarks", "fraction": 0.05, "message": "..."}
    {"type": "done", "gaussians": 39382, "builder": "engines.create.photo", "seconds": 41.2}
    {"type": "error", "message": "no face found in the photo; ..."}      (exit status 1)

A photo goes through the one-shot photo pipeline (:mod:`engines.create.photo`);
a video through the replica builder (:mod:`engines.create.replica`), whose clip
checks (too short, no face, several faces, ...) end the build with their message.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PHOTO_STEPS = 22  # progress callbacks the photo pipeline makes (landmarks, layers, rig, 17 refinement rounds)
Emit = Callable[[dict[str, Any]], None]


def emit_line(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class _Steps:
    """Turns the pipeline's free-text progress callbacks into fractions between ``start`` and ``end``."""

    def __init__(self, emit: Emit, stage: str, total: int, start: float = 0.0, end: float = 0.9) -> None:
        self.emit, self.stage, self.total, self.start, self.end = emit, stage, total, start, end
        self.done = 0

    def __call__(self, message: str) -> None:
        self.done += 1
        fraction = self.start + (self.end - self.start) * min(1.0, self.done / self.total)
        self.emit(
            {"type": "progress", "stage": self.stage, "fraction": round(fraction, 3), "message": message}
        )


class _StageProgress:
    """The replica builder's ``progress(stage, done, total)`` callbacks as fractions between ``start`` and ``end``.

    Stages are not equally long and their number is not known up front: each
    new stage takes half of what is left of the range, and moves within it by
    ``done / total``.
    """

    def __init__(self, emit: Emit, start: float, end: float) -> None:
        self.emit, self.start, self.end = emit, start, end
        self.stage = ""
        self.lo, self.hi = start, start

    def __call__(self, stage: str, done: int = 0, total: int = 0, *rest: object) -> None:
        if stage != self.stage:
            self.stage = stage
            self.lo = self.hi
            self.hi = self.lo + 0.5 * (self.end - self.lo)
        frac = self.lo + (self.hi - self.lo) * (min(1.0, done / total) if total else 0.0)
        message = f"{stage} {done}/{total}" if total else stage
        self.emit(
            {"type": "progress", "stage": str(stage)[:40], "fraction": round(frac, 3), "message": message}
        )


REFERENCE_TEXT = (
    "Hello, this is how I sound when I read a few sentences aloud. The quick brown fox jumps over the lazy "
    "dog, and a big blue boat floats by. Thank you for listening to me."
)


def video_audio(path: Path, max_s: float = 120.0) -> tuple[np.ndarray, int] | None:
    """The first ``max_s`` seconds of a video's audio as mono float32 (None: no audio track)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        pieces: list[np.ndarray] = []
        total = 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                pcm = out.to_ndarray().reshape(-1)
                pieces.append(pcm)
                total += len(pcm)
            if total >= max_s * 16000:
                break
    if not pieces:
        return None
    return np.concatenate(pieces).astype(np.float32), 16000


def voice_embedding(voice: dict[str, str], cache: Path) -> np.ndarray:
    """The speaker embedding of a Piper voice reading :data:`REFERENCE_TEXT` (cached per voice file)."""
    from engines import speaker
    from engines.tts import PiperTTS

    model = Path(voice["model"])
    stat = model.stat()
    path = cache / f"{voice['id']}-{stat.st_size}-{int(stat.st_mtime)}.npy"
    if path.is_file():
        return np.load(path)
    tts = PiperTTS.load(model, Path(voice["config"]), threads=1)
    chunks = list(tts.synthesize(REFERENCE_TEXT))
    emb = speaker.embed(np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def match_voice(source: Path, voices: list[dict[str, str]], emit: Emit) -> dict[str, Any] | None:
    """Of the installed Piper ``voices``, the one that sounds closest to the person in the video's audio."""
    from engines import speaker
    from engines.create.face_env import cache_dir

    audio = video_audio(source)
    if audio is None or len(voices) < 2:
        return None
    emit({"type": "progress", "stage": "voice", "fraction": 0.93, "message": "finding the closest voice"})
    try:
        person = speaker.embed(*audio)
    except speaker.SpeakerError as exc:
        emit({"type": "progress", "stage": "voice", "fraction": 0.93, "message": f"no voice match: {exc}"})
        return None
    cache = cache_dir() / "voice-embeddings"
    embeddings = {v["id"]: voice_embedding(v, cache) for v in voices}
    best, scores = speaker.closest_voice(person, embeddings)
    return {"type": "voice", "voice": best, "similarity": scores[best], "scores": scores}


def build(source: Path, kind: str, out: Path, emit: Emit) -> dict[str, Any]:
    """Build the avatar and its preview into ``out``; returns the ``done`` event's fields."""
    from PIL import Image

    from engines.create.photo import create_from_image
    from engines.library.uploads import load_photo
    from engines.splat.avatar import save_avatar
    from engines.splat.preview import render_preview

    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    if kind == "photo":
        emit({"type": "progress", "stage": "landmarks", "fraction": 0.01, "message": "finding the face"})
        image = load_photo(source)
        avatar = create_from_image(
            image,
            provenance={"source": "uploaded photo", "licence": "as the source photo"},
            progress=_Steps(emit, "photo", PHOTO_STEPS, 0.02, 0.9),
        )
        builder = "engines.create.photo"
    elif kind == "video":
        from engines.create.replica import create_from_video

        avatar = create_from_video(source, progress=_StageProgress(emit, 0.0, 0.9))
        builder = "engines.create.replica"
    else:
        raise ValueError(f"unknown source kind {kind!r}")
    emit({"type": "progress", "stage": "saving", "fraction": 0.92, "message": "saving the avatar"})
    save_avatar(avatar, out / "avatar.safetensors")
    emit({"type": "progress", "stage": "preview", "fraction": 0.95, "message": "rendering the preview"})
    Image.fromarray(render_preview(avatar)).save(out / "preview.png", optimize=True)
    return {"gaussians": avatar.count, "builder": builder, "seconds": round(time.monotonic() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engines.library.build_worker")
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--kind", choices=["photo", "video"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--match-voices",
        type=Path,
        default=None,
        help="JSON [{id, model, config}]: pick the closest to the video",
    )
    args = parser.parse_args(argv)
    from engines.create.face_env import FaceEnvError
    from engines.create.photo import PhotoAvatarError

    try:
        result = build(args.source, args.kind, args.out, emit_line)
        if args.match_voices is not None and args.kind == "video":
            voices = json.loads(args.match_voices.read_text())
            try:
                match = match_voice(args.source, voices, emit_line)
            except Exception as exc:  # the avatar is built: a failed voice match only leaves the voice unset
                traceback.print_exc()
                emit_line(
                    {
                        "type": "progress",
                        "stage": "voice",
                        "fraction": 0.97,
                        "message": f"no voice match: {exc}",
                    }
                )
                match = None
            if match is not None:
                emit_line(match)
    except (PhotoAvatarError, FaceEnvError, ValueError, OSError) as exc:
        emit_line({"type": "error", "message": str(exc)})
        return 1
    except Exception as exc:  # a bug: report it with its traceback in the log
        traceback.print_exc()
        emit_line({"type": "error", "message": f"the build crashed: {type(exc).__name__}: {exc}"})
        return 1
    emit_line({"type": "done", **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
