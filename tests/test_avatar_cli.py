"""`splatcast avatar list | add | rm` on a library directory, as a user runs them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.library.store import AvatarLibrary
from engines.splat.avatar import save_avatar
from engines.splat.synthetic import make_test_avatar


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "realtime.cli", "avatar", *args], capture_output=True, text=True, timeout=600
    )


def test_add_list_rm_an_avatar_file(tmp_path: Path) -> None:
    lib = tmp_path / "avatars"
    path = tmp_path / "mine.safetensors"
    save_avatar(make_test_avatar(n_gaussians=600), path)
    added = _cli("add", str(path), "--name", "Synthetic one", "--avatars", str(lib))
    assert added.returncode == 0, added.stderr
    avatar_id = added.stdout.split()[1]
    listed = _cli("list", "--json", "--avatars", str(lib))
    entries = json.loads(listed.stdout)
    assert [e["id"] for e in entries] == ["default", avatar_id]
    assert (
        entries[1]["name"] == "Synthetic one" and entries[1]["source"] == "file" and not entries[1]["in_use"]
    )
    table = _cli("list", "--avatars", str(lib)).stdout
    assert avatar_id in table and "Synthetic one" in table
    # a session (here: a lease held by this process) uses it: rm is refused and the avatar stays
    lease = AvatarLibrary(lib).lease(avatar_id)
    refused = _cli("rm", avatar_id, "--avatars", str(lib))
    assert refused.returncode == 1 and "in use" in refused.stderr
    assert json.loads(_cli("list", "--json", "--avatars", str(lib)).stdout)[1]["in_use"] is True
    lease.release()
    removed = _cli("rm", avatar_id, "--avatars", str(lib))
    assert removed.returncode == 0, removed.stderr
    assert [e["id"] for e in json.loads(_cli("list", "--json", "--avatars", str(lib)).stdout)] == ["default"]
    assert _cli("rm", "default", "--avatars", str(lib)).returncode == 1
    assert _cli("rm", avatar_id, "--avatars", str(lib)).returncode == 1  # gone


def test_add_refuses_bad_files_clearly(tmp_path: Path) -> None:
    lib = tmp_path / "avatars"
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo\n" * 20)
    out = _cli("add", str(text), "--name", "x", "--avatars", str(lib))
    assert out.returncode == 1 and "not an image or a video" in out.stderr
    assert _cli("add", str(tmp_path / "missing.jpg"), "--name", "x", "--avatars", str(lib)).returncode == 2
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": 1}       ')
    out = _cli("add", str(broken), "--name", "x", "--avatars", str(lib))
    assert out.returncode == 1 and "not a splatcast avatar" in out.stderr
    assert [e["id"] for e in json.loads(_cli("list", "--json", "--avatars", str(lib)).stdout)] == ["default"]


@pytest.mark.slow
def test_add_builds_from_a_photo(tmp_path: Path) -> None:
    skimage = pytest.importorskip("skimage")
    from PIL import Image

    from engines.create.face_env import FaceEnvError, ensure_env

    try:
        ensure_env()
    except FaceEnvError as exc:
        pytest.skip(f"mediapipe environment unavailable: {exc}")
    lib = tmp_path / "avatars"
    photo = tmp_path / "me.jpg"
    Image.fromarray(np.asarray(skimage.data.astronaut())).save(photo, quality=92)
    blank = tmp_path / "wall.png"
    buf = io.BytesIO()
    Image.fromarray(np.full((300, 300, 3), 80, np.uint8)).save(buf, format="PNG")
    blank.write_bytes(buf.getvalue())
    out = _cli("add", str(blank), "--name", "wall", "--avatars", str(lib))
    assert out.returncode == 1 and "no face" in out.stderr
    out = _cli("add", str(photo), "--name", "Eileen", "--voice", "default", "--avatars", str(lib))
    assert out.returncode == 0, out.stderr
    assert "built by engines.create.photo" in out.stdout
    entries = json.loads(_cli("list", "--json", "--avatars", str(lib)).stdout)
    assert [e["name"] for e in entries] == ["Default (astronaut)", "Eileen"]
    assert entries[1]["source"] == "photo" and entries[1]["gaussians"] > 10_000


def test_pipecat_service_takes_a_library_id(tmp_path: Path) -> None:
    """`SplatAvatarService(avatar=<library id>)` streams that library avatar (and says clearly when there is none)."""
    pytest.importorskip("pipecat")
    from realtime.pipecat.service import SplatAvatarError, SplatAvatarService

    library = AvatarLibrary(tmp_path / "avatars")
    source = tmp_path / "mine.safetensors"
    save_avatar(make_test_avatar(n_gaussians=600), source)
    entry = library.add(source, "For the bot", "file")
    service = SplatAvatarService(avatar=entry.id, avatars=library.root, size=128, warm=False)
    assert service._config.avatar == entry.path
    with pytest.raises(SplatAvatarError, match="does not exist"):
        SplatAvatarService(avatar="0123456789ab", avatars=library.root, warm=False)
