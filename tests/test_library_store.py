"""The avatar library directory and the loaded-avatar cache: atomic entries, in-use locks, memory bound."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engines.library.cache import AvatarCache, nbytes_of
from engines.library.store import (
    DEFAULT_ID,
    AvatarEntry,
    AvatarInUseError,
    AvatarLibrary,
    AvatarNotFoundError,
    LibraryError,
    ProtectedAvatarError,
    default_library_dir,
)
from engines.splat.avatar import load_avatar, save_avatar
from engines.splat.synthetic import make_test_avatar


@pytest.fixture(scope="module")
def avatar_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "small.safetensors"
    save_avatar(make_test_avatar(n_gaussians=800), path)
    return path


@pytest.fixture
def library(tmp_path: Path) -> AvatarLibrary:
    return AvatarLibrary(tmp_path / "avatars")


def test_default_dir_follows_data_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPLATCAST_DATA_DIR", str(tmp_path))
    assert default_library_dir() == tmp_path / "avatars"
    monkeypatch.delenv("SPLATCAST_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_library_dir() == tmp_path / "xdg" / "splatcast" / "avatars"


def test_bundled_default_is_always_listed_first_and_protected(library: AvatarLibrary) -> None:
    entries = library.list()
    assert [e.id for e in entries] == [DEFAULT_ID]
    assert entries[0].source == "bundled" and entries[0].path.is_file()
    with pytest.raises(ProtectedAvatarError):
        library.remove(DEFAULT_ID)
    assert library.get(DEFAULT_ID).bundled


def test_add_lists_with_metadata_and_survives_a_new_instance(
    library: AvatarLibrary, avatar_file: Path
) -> None:
    preview = avatar_file.parent / "p.png"
    preview.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    entry = library.add(avatar_file, "  Ada\n Lovelace ", "photo", voice="other-voice", preview=preview)
    assert entry.name == "Ada Lovelace" and entry.source == "photo" and entry.voice == "other-voice"
    assert entry.gaussians == load_avatar(avatar_file).count and entry.bytes == avatar_file.stat().st_size
    assert entry.created.endswith("Z") and entry.preview is not None
    assert avatar_file.exists() and preview.exists()  # copied, not moved
    public = entry.to_json()
    assert "path" not in public and public["preview"] == f"/api/avatars/{entry.id}/preview.png"
    again = AvatarLibrary(library.root)
    assert [e.id for e in again.list()] == [DEFAULT_ID, entry.id]
    assert load_avatar(again.get(entry.id).path).count == entry.gaussians
    meta = json.loads((library.root / entry.id / "meta.json").read_text())
    assert meta["id"] == entry.id and meta["version"] == 1


def test_add_refuses_what_is_not_an_avatar_and_leaves_nothing(library: AvatarLibrary, tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not an avatar at all")
    with pytest.raises(LibraryError, match="not a splatcast avatar"):
        library.add(junk, "junk", "file")
    with pytest.raises(LibraryError, match="name"):
        library.add(junk, "   ", "file", gaussians=1)
    assert [e.id for e in library.list()] == [DEFAULT_ID]
    staging = library.root / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
    missing = tmp_path / "gone.safetensors"
    with pytest.raises(FileNotFoundError):  # fails inside the staging area: it is cleaned up
        library.add(missing, "gone", "file", gaussians=1)
    assert not any(staging.iterdir())
    assert [e.id for e in library.list()] == [DEFAULT_ID]


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "A", "x" * 65, "default/../x"])
def test_ids_never_reach_outside_the_library(library: AvatarLibrary, bad: str) -> None:
    with pytest.raises(AvatarNotFoundError):
        library.get(bad)
    with pytest.raises((AvatarNotFoundError, ProtectedAvatarError)):
        library.remove(bad)


def test_lease_blocks_removal_until_released(library: AvatarLibrary, avatar_file: Path) -> None:
    entry = library.add(avatar_file, "held", "file")
    lease = library.lease(entry.id)
    assert library.in_use(entry.id)
    with pytest.raises(AvatarInUseError, match="in use"):
        library.remove(entry.id)
    assert library.get(entry.id).path.is_file()
    lease.release()
    assert not library.in_use(entry.id)
    library.remove(entry.id)
    with pytest.raises(AvatarNotFoundError):
        library.get(entry.id)
    assert not (library.root / entry.id).exists()
    with pytest.raises(AvatarNotFoundError):
        library.remove(entry.id)


def _hold_lease(
    root: str,
    avatar_id: str,
    ready: multiprocessing.synchronize.Event,
    done: multiprocessing.synchronize.Event,
) -> None:
    lease = AvatarLibrary(Path(root)).lease(avatar_id)
    ready.set()
    done.wait(30)
    lease.release()


def test_a_lease_in_another_process_blocks_removal(library: AvatarLibrary, avatar_file: Path) -> None:
    entry = library.add(avatar_file, "shared", "file")
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lease, args=(str(library.root), entry.id, ready, done))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(AvatarInUseError):
            library.remove(entry.id)
    finally:
        done.set()
        proc.join(30)
    library.remove(entry.id)


def test_a_killed_holder_frees_the_avatar(library: AvatarLibrary, avatar_file: Path) -> None:
    entry = library.add(avatar_file, "crashy", "file")
    code = (
        "import sys, time; from pathlib import Path; from engines.library.store import AvatarLibrary;"
        f"l = AvatarLibrary(Path({str(library.root)!r})).lease({entry.id!r}); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert library.in_use(entry.id)
        proc.kill()
        proc.wait(10)
        assert not library.in_use(entry.id)
    finally:
        proc.kill()
    library.remove(entry.id)


def test_staging_debris_is_swept_and_never_listed(library: AvatarLibrary, avatar_file: Path) -> None:
    stage = library.staging_dir("upload")
    (stage / "half.mp4").write_bytes(b"x" * 100)
    (library.root / "not-an-entry").mkdir()  # a folder without meta.json
    assert [e.id for e in library.list()] == [DEFAULT_ID]
    assert library.sweep_staging() == 0 and stage.exists()  # fresh: maybe another process's upload
    old = time.time() - 7200
    os.utime(stage, (old, old))
    assert library.sweep_staging() == 1 and not stage.exists()


def test_update_renames_and_changes_voice_atomically(library: AvatarLibrary, avatar_file: Path) -> None:
    entry = library.add(avatar_file, "first", "video", voice="a")
    changed = library.update(entry.id, name="second", voice=None)
    assert changed.name == "second" and changed.voice is None and changed.created == entry.created
    assert not [p for p in (library.root / entry.id).iterdir() if p.name.endswith(".tmp")]


# --- cache --------------------------------------------------------------------------------------------


def _add_many(library: AvatarLibrary, avatar_file: Path, n: int) -> list[str]:
    return [library.add(avatar_file, f"a{i}", "file", gaussians=800).id for i in range(n)]


def test_cache_loads_once_and_reports_hits(library: AvatarLibrary, avatar_file: Path) -> None:
    (aid,) = _add_many(library, avatar_file, 1)
    loads: list[str] = []

    def load(entry: AvatarEntry) -> object:
        loads.append(entry.id)
        return load_avatar(entry.path)

    cache: AvatarCache = AvatarCache(library, load)
    a = cache.acquire(aid)
    b = cache.acquire(aid)
    assert a.value is b.value and loads == [aid]
    assert cache.users(aid) == 2 and library.in_use(aid)
    a.release()
    a.release()  # idempotent
    assert cache.users(aid) == 1 and library.in_use(aid)
    b.release()
    assert cache.users(aid) == 0 and not library.in_use(aid)
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 1


def test_cache_memory_bound_evicts_idle_lru_never_in_use(library: AvatarLibrary, avatar_file: Path) -> None:
    ids = _add_many(library, avatar_file, 4)
    one = nbytes_of(load_avatar(avatar_file))
    assert one > 10_000
    cache: AvatarCache = AvatarCache(library, lambda e: load_avatar(e.path), max_bytes=int(2.5 * one))
    held = [cache.acquire(i) for i in ids[:3]]  # 3 in use: over the bound, but none may go
    assert cache.cached_ids() == ids[:3]
    assert cache.total_bytes == 3 * one > cache.max_bytes
    held[1].release()  # idle now and the bound is exceeded: the idle one goes
    assert cache.cached_ids() == [ids[0], ids[2]]
    held[0].release()
    assert cache.total_bytes <= cache.max_bytes  # back under the bound
    d = cache.acquire(ids[3])
    assert ids[2] in cache.cached_ids() and ids[3] in cache.cached_ids()
    assert cache.total_bytes <= cache.max_bytes + one
    assert cache.stats()["evictions"] >= 1
    held[2].release()
    d.release()
    assert cache.total_bytes <= cache.max_bytes


def test_cache_hold_blocks_delete_and_a_deleted_avatar_is_not_served(
    library: AvatarLibrary, avatar_file: Path
) -> None:
    (aid,) = _add_many(library, avatar_file, 1)
    cache: AvatarCache = AvatarCache(library, lambda e: load_avatar(e.path))
    held = cache.acquire(aid)
    with pytest.raises(AvatarInUseError):
        library.remove(aid)
    held.release()
    library.remove(aid)  # idle in the cache: deletable
    with pytest.raises(AvatarNotFoundError):
        cache.acquire(aid)
    assert aid not in cache.cached_ids()


def test_cache_load_failure_releases_the_lease(library: AvatarLibrary, avatar_file: Path) -> None:
    (aid,) = _add_many(library, avatar_file, 1)

    def broken(entry: AvatarEntry) -> object:
        raise ValueError("bad file")

    cache: AvatarCache = AvatarCache(library, broken)
    with pytest.raises(ValueError):
        cache.acquire(aid)
    assert not library.in_use(aid) and cache.cached_ids() == []


def test_default_avatar_is_cacheable(library: AvatarLibrary) -> None:
    cache: AvatarCache = AvatarCache(library, lambda e: np.zeros(10))
    with cache.acquire(DEFAULT_ID) as held:
        assert held.entry.bundled and held.value.shape == (10,)
