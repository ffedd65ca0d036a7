"""The avatar file format: round trip and every AvatarFormatError case."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from engines.splat.avatar import (
    FORMAT_VERSION,
    METADATA_KEY,
    Avatar,
    AvatarFormatError,
    LodLevel,
    load_avatar,
    save_avatar,
)
from engines.splat.synthetic import make_test_avatar


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return make_test_avatar(1500, seed=3)


@pytest.fixture
def saved(avatar: Avatar, tmp_path: Path) -> Path:
    return save_avatar(avatar, tmp_path / "a.safetensors")


def _rewrite(path: Path, tensors: dict[str, np.ndarray] | None = None, meta: dict | None = None) -> None:
    """Rewrite an avatar file with changed tensors and/or metadata (bypassing save_avatar's checks)."""
    t = load_file(str(path))
    with path.open("rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    m = json.loads(header["__metadata__"][METADATA_KEY])
    t.update(tensors or {})
    m.update(meta or {})
    save_file(t, str(path), metadata={METADATA_KEY: json.dumps(m)})


def test_round_trip_keeps_everything(avatar: Avatar, saved: Path) -> None:
    back = load_avatar(saved)
    assert back.channels == avatar.channels
    assert back.camera == avatar.camera
    np.testing.assert_array_equal(back.means, avatar.means)  # float32 storage: exact
    np.testing.assert_array_equal(back.layers, avatar.layers)
    np.testing.assert_allclose(back.colors, avatar.colors, atol=1e-3)  # float16 storage
    np.testing.assert_allclose(back.scales, avatar.scales, rtol=1e-3)
    np.testing.assert_allclose(back.opacities, avatar.opacities, atol=1e-3)
    np.testing.assert_allclose(np.abs((back.quats * avatar.quats).sum(1)), 1.0, atol=1e-3)
    np.testing.assert_array_equal(back.rig.delta_index, avatar.rig.delta_index)
    np.testing.assert_array_equal(back.rig.delta_offsets, avatar.rig.delta_offsets)
    np.testing.assert_allclose(back.rig.delta_means, avatar.rig.delta_means, rtol=2e-3, atol=1e-6)
    np.testing.assert_array_equal(back.rig.jaw_angle, avatar.rig.jaw_angle)
    assert back.metadata["version"] == FORMAT_VERSION
    assert back.metadata["mouth_box"] == pytest.approx(avatar.metadata["mouth_box"])
    assert back.metadata["provenance"]["source"].startswith("engines.splat.synthetic")
    assert back.neutral(3).shape == (3, len(avatar.channels))
    assert back.neutral(3).dtype == np.float32 and not back.neutral(3).any()
    assert back.channel_index("jawOpen") == avatar.channels.index("jawOpen")
    assert back.rest(1)[0, back.channel_index("mouthPressLeft")] == 1.0


def test_lod_levels_round_trip(avatar: Avatar, tmp_path: Path) -> None:
    k = avatar.count // 2
    lod = LodLevel(
        index=np.arange(0, avatar.count, 2, dtype=np.int32)[:k],
        scales=avatar.scales[::2][:k] * 1.5,
        opacities=avatar.opacities[::2][:k],
        colors=avatar.colors[::2][:k],
    )
    avatar.lods = [lod]
    try:
        back = load_avatar(save_avatar(avatar, tmp_path / "lod.safetensors"))
    finally:
        avatar.lods = []
    assert len(back.lods) == 1
    np.testing.assert_array_equal(back.lods[0].index, lod.index)
    np.testing.assert_allclose(back.lods[0].scales, lod.scales, rtol=1e-3)


def test_truncated_file(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(AvatarFormatError, match="truncated"):
        load_avatar(saved)


def test_wrong_shape(saved: Path, avatar: Avatar) -> None:
    _rewrite(saved, {"means": np.zeros((avatar.count, 2), np.float32)})
    with pytest.raises(AvatarFormatError, match="means"):
        load_avatar(saved)


def test_rig_index_out_of_range(saved: Path, avatar: Avatar) -> None:
    bad = avatar.rig.delta_index.copy()
    bad[0] = avatar.count + 5
    _rewrite(saved, {"rig.delta_index": bad})
    with pytest.raises(AvatarFormatError, match="delta_index"):
        load_avatar(saved)


@pytest.mark.parametrize("name", ["means", "colors", "rig.delta_means"])
def test_nan(saved: Path, name: str) -> None:
    t = load_file(str(saved))[name].copy()
    t.reshape(-1)[0] = np.nan
    _rewrite(saved, {name: t})
    with pytest.raises(AvatarFormatError, match="NaN"):
        load_avatar(saved)


def test_unknown_version(saved: Path) -> None:
    _rewrite(saved, meta={"version": FORMAT_VERSION + 1})
    with pytest.raises(AvatarFormatError, match="version"):
        load_avatar(saved)


def test_channel_count_mismatch(saved: Path, avatar: Avatar) -> None:
    _rewrite(saved, meta={"channels": list(avatar.channels[:-1])})
    with pytest.raises(AvatarFormatError):
        load_avatar(saved)


def test_pickle_is_refused_without_unpickling(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple:
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"means": Boom()}))
    with pytest.raises(AvatarFormatError, match="not a safetensors file"):
        load_avatar(path)


@pytest.mark.parametrize("content", [b"", b"1234", b"\x10\x00\x00\x00\x00\x00\x00\x00not json here!!!"])
def test_not_safetensors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(AvatarFormatError):
        load_avatar(path)


def test_plain_safetensors_without_avatar_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"x": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(AvatarFormatError, match="metadata"):
        load_avatar(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AvatarFormatError, match="no such"):
        load_avatar(tmp_path / "nope.safetensors")


def test_save_refuses_invalid_avatar(avatar: Avatar, tmp_path: Path) -> None:
    bad = Avatar(**{**avatar.__dict__, "opacities": np.zeros(avatar.count, np.float32)})
    with pytest.raises(AvatarFormatError, match="opacities"):
        save_avatar(bad, tmp_path / "bad.safetensors")
