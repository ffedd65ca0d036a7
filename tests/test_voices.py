"""Piper voices on disk: discovery, resolution, and exact alignment lip sync for any voice's phoneme set."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from engines import assets
from engines.a2v.visemes import JAW_OPEN_INDEX, alignments_to_frames
from engines.a2v.voice_phonemes import PhonemeTable, canonical_parts
from engines.tts import Alignment, PiperTTS, SynthesisOptions
from engines.voices import DEFAULT_VOICE, VoiceCatalog, VoiceError, read_voice

STILL = SynthesisOptions(noise_scale=0.0, noise_w_scale=0.0)


def second_voice(folder: Path, name: str = "en_US-other-medium") -> Path:
    """The bundled voice under another name (links, not copies): a second Piper voice on disk."""
    model, config = assets.piper_voice()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.onnx"
    os.symlink(model, target)
    os.symlink(config, folder / f"{name}.onnx.json")
    return target


def test_catalog_lists_bundled_first_and_voices_in_its_dirs(tmp_path: Path) -> None:
    second_voice(tmp_path / "voices")
    (tmp_path / "voices" / "broken.onnx").write_bytes(b"nope")  # no config: skipped, not fatal
    catalog = VoiceCatalog(dirs=[tmp_path / "voices"])
    ids = [v.id for v in catalog.list()]
    assert ids == ["en_US-joe-medium", "en_US-other-medium"]
    bundled = catalog.get(DEFAULT_VOICE)
    assert bundled.bundled and bundled.sample_rate == 22050 and bundled.language == "en_US"
    other = catalog.get("en_US-other-medium")
    assert not other.bundled and other.phoneme_type == "espeak"
    assert other.to_json()["id"] == "en_US-other-medium"
    with pytest.raises(VoiceError, match="no voice 'nobody'"):
        catalog.get("nobody")


def test_default_voice_can_be_any_voice_on_disk(tmp_path: Path) -> None:
    model = second_voice(tmp_path / "elsewhere", "de_DE-test-low")
    catalog = VoiceCatalog(default=model)  # --voice PATH
    assert catalog.get(DEFAULT_VOICE).id == "de_DE-test-low"
    assert catalog.list()[0].id == "de_DE-test-low"
    assert (
        catalog.resolve(str(model.with_name(model.name + ".json"))).id == "de_DE-test-low"
    )  # the config path


def test_voice_dropped_in_later_is_found(tmp_path: Path) -> None:
    catalog = VoiceCatalog(dirs=[tmp_path / "voices"])
    second_voice(tmp_path / "voices", "late")
    assert catalog.get("late").id == "late"


def test_bad_voice_paths_say_what_to_give(tmp_path: Path) -> None:
    (tmp_path / "x.onnx").write_bytes(b"model")
    with pytest.raises(VoiceError, match=r"no voice config beside it"):
        read_voice(tmp_path / "x.onnx")
    (tmp_path / "x.onnx.json").write_text("{}")
    with pytest.raises(VoiceError, match="not a Piper voice config"):
        read_voice(tmp_path / "x.onnx")
    with pytest.raises(VoiceError, match="not a Piper voice model"):
        read_voice(tmp_path / "missing.onnx")


# --- phoneme sets ---------------------------------------------------------------------------------------


def test_every_phoneme_of_the_bundled_voice_has_a_place() -> None:
    _, config = assets.piper_voice()
    table = PhonemeTable.from_config(json.loads(config.read_text()))
    assert table.unmapped == ()
    assert table.parts["ʘ"] == ("p",) and table.parts["5"] == ("ː",)  # a click, a tone digit
    english = [Alignment(p, 10) for p in "^həlˈoʊ wˈɜːld$"]
    assert table.rewrite(english) == tuple(english)  # what the English voice says is left as it is


@pytest.mark.parametrize(
    ("symbol", "parts"),
    [
        ("a", ("a",)),
        ("aɪ", ("a", "ɪ")),  # a vowel cluster: nucleus and glide
        ("oʊə", ("o", "ə")),
        ("ã", ("a",)),  # nasal vowel with a combining tilde
        ("A", ("a",)),  # text voices: letters
        ("3", ("ː",)),  # a tone: its time goes to the previous phoneme
        ("ang", ("a", "g")),  # a multi-letter (pinyin) final
        ("ˈ", ("ˈ",)),
        ("^", ("^",)),
        ("☃", None),
    ],
)
def test_canonical_parts(symbol: str, parts: tuple[str, ...] | None) -> None:
    assert canonical_parts(symbol) == parts


def test_rewrite_keeps_every_sample() -> None:
    config = {
        "phoneme_id_map": {"_": [0], "^": [1], "$": [2], " ": [3], "aɪ": [4], "b": [5], "2": [6], "☃": [7]}
    }
    table = PhonemeTable.from_config(config)
    assert table.unmapped == ("☃",) and not table.identity
    src = [
        Alignment("^", 100),
        Alignment("b", 301),
        Alignment("aɪ", 6001),
        Alignment("2", 50),
        Alignment("☃", 77),
        Alignment("$", 9),
    ]
    out = table.rewrite(src)
    assert sum(a.num_samples for a in out) == sum(a.num_samples for a in src)
    assert [a.phoneme for a in out] == ["^", "b", "a", "ɪ", "ː", "h", "$"]
    assert [a.num_samples for a in out[2:4]] == [3601, 2400]
    frames = alignments_to_frames(out, 22050, fps=25)
    assert frames[:, JAW_OPEN_INDEX].max() > 0.3  # the diphthong opens the jaw


def test_a_second_voice_on_disk_drives_the_lips_exactly(tmp_path: Path) -> None:
    """The same text through the bundled voice and through the same model under another name, loaded from
    its own files: identical alignments, and the mouth follows them (jaw opens while it speaks)."""
    model = second_voice(tmp_path / "voices")
    other = PiperTTS.load(model, model.with_name(model.name + ".json"))
    bundled = PiperTTS.load()
    assert other.name == "en_US-other-medium" and other.phonemes == bundled.phonemes
    text = "Papa bought a big blue boat."
    a = list(other.synthesize(text, STILL))
    b = list(bundled.synthesize(text, STILL))
    assert [c.alignments for c in a] == [c.alignments for c in b]
    chunk = a[0]
    assert sum(x.num_samples for x in chunk.alignments) == len(chunk.pcm)
    frames = alignments_to_frames(chunk.alignments, chunk.sample_rate, fps=25)
    jaw = frames[:, JAW_OPEN_INDEX]
    assert len(frames) == int(np.ceil(len(chunk.pcm) / chunk.sample_rate * 25))
    assert jaw.max() > 0.4 and jaw[-1] < 0.05  # opens on the vowels, closed at the end
