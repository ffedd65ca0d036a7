"""A directory of avatars: ``.safetensors`` files plus metadata and a preview, and the bundled default.

Layout of the library directory (``--avatars DIR``, default
:func:`default_library_dir`)::

    DIR/
      <id>/avatar.safetensors   the avatar (engines.splat.avatar format)
      <id>/meta.json            {id, name, created, source, voice, preview, gaussians, bytes, builder}
      <id>/preview.png          a head-and-shoulders render (256 px)
      <id>/in-use.lock          flock target: shared while a session uses it
      .staging/                 uploads and builds in progress (swept at start)

An entry appears all at once: it is assembled in ``.staging/`` and renamed
into place (one ``rename``), and ``meta.json`` is rewritten through a
temporary file and ``os.replace``; a reader never sees half an avatar, and a
crash leaves only staging debris that the next start removes.

**In use.** :meth:`AvatarLibrary.lease` takes a shared ``flock`` on the
entry's lock file for as long as a session uses it; :meth:`AvatarLibrary.remove`
needs the exclusive lock without waiting, so an avatar in use is never deleted
under its session, whether the delete comes from the server's API or from
``splatcast avatar rm`` in another process. Locks die with their process.

The bundled default avatar is always listed first under the id ``default``
and cannot be removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from engines import assets

logger = logging.getLogger(__name__)

DEFAULT_ID = "default"
AVATAR_FILE = "avatar.safetensors"
META_FILE = "meta.json"
PREVIEW_FILE = "preview.png"
LOCK_FILE = "in-use.lock"
STAGING = ".staging"
META_VERSION = 1
MAX_NAME_CHARS = 80
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

SourceKind = Literal["photo", "video", "file", "bundled"]
SOURCE_KINDS: tuple[str, ...] = ("photo", "video", "file", "bundled")


class LibraryError(Exception):
    """A library operation cannot be done; ``status`` is the HTTP status that fits it."""

    status = 400


class AvatarNotFoundError(LibraryError):
    status = 404


class AvatarInUseError(LibraryError):
    status = 409


class ProtectedAvatarError(LibraryError):
    """The bundled default avatar cannot be removed."""

    status = 403


def default_library_dir() -> Path:
    """``$SPLATCAST_DATA_DIR/avatars``, else ``$XDG_DATA_HOME/splatcast/avatars``, else ``~/.local/share/splatcast/avatars``."""
    env = os.environ.get("SPLATCAST_DATA_DIR")
    if env:
        return Path(env).expanduser() / "avatars"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "splatcast" / "avatars"


def check_id(avatar_id: str) -> str:
    """The id if it is a well-formed library id (lower-case letters, digits, ``-``, ``_``; no paths)."""
    if not isinstance(avatar_id, str) or not ID_PATTERN.fullmatch(avatar_id):
        raise AvatarNotFoundError(f"no avatar {avatar_id!r} (ids are 1-64 of a-z 0-9 - _)")
    return avatar_id


def clean_name(name: str) -> str:
    """A display name: printable, one line, 1..80 characters."""
    text = " ".join(str(name).split())
    text = "".join(ch for ch in text if ch.isprintable())
    if not text:
        raise LibraryError("the avatar needs a name")
    if len(text) > MAX_NAME_CHARS:
        raise LibraryError(f"the avatar's name is over {MAX_NAME_CHARS} characters")
    return text


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AvatarEntry:
    """One avatar of the library as listed (the metadata, not the loaded tensors)."""

    id: str
    name: str
    created: str  # ISO 8601 UTC
    source: str  # photo | video | file | bundled
    voice: str | None  # a voice id (engines.voices) or None for the server's default voice
    path: Path  # the .safetensors file
    preview: Path | None  # PNG, None until rendered (the bundled default's is rendered on demand)
    gaussians: int = 0
    bytes: int = 0
    builder: str = ""  # what made it (engines.create.photo, engines.create.replica, ...)

    @property
    def bundled(self) -> bool:
        return self.id == DEFAULT_ID

    def to_json(self) -> dict[str, Any]:
        """The public view (no file system paths)."""
        out = asdict(self)
        out.pop("path")
        out["preview"] = f"/api/avatars/{self.id}/preview.png"
        out["bundled"] = self.bundled
        return out


class AvatarLease:
    """A session's hold on an avatar: its files cannot be removed until :meth:`release`."""

    def __init__(self, entry: AvatarEntry, fd: int | None) -> None:
        self.entry = entry
        self._fd = fd
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> AvatarLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a lease dropped without release() must not hold its lock forever
        self.release()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file in the same directory and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class AvatarLibrary:
    """The avatars of one library directory plus the bundled default (thread-safe)."""

    def __init__(self, root: Path | None = None, default_avatar: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_library_dir()
        self._default_path = default_avatar
        self._lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)

    # --- listing ---------------------------------------------------------------------------------
    def default_entry(self) -> AvatarEntry:
        path = self._default_path or assets.default_avatar()
        return AvatarEntry(
            id=DEFAULT_ID,
            name="Default (astronaut)" if self._default_path is None else f"Default ({path.stem})",
            created="",
            source="bundled",
            voice=None,
            path=path,
            preview=None,
            bytes=path.stat().st_size if path.exists() else 0,
            builder="bundled",
        )

    def list(self) -> list[AvatarEntry]:
        """The default first, then the library's avatars oldest first (unreadable entries are skipped)."""
        entries = []
        for child in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if child.name.startswith(".") or not child.is_dir() or not ID_PATTERN.fullmatch(child.name):
                continue
            try:
                entries.append(self._read(child.name))
            except LibraryError as exc:
                logger.warning("library: skipping %s: %s", child, exc)
        entries.sort(key=lambda e: (e.created, e.id))
        return [self.default_entry(), *entries]

    def get(self, avatar_id: str) -> AvatarEntry:
        if avatar_id == DEFAULT_ID:
            return self.default_entry()
        return self._read(check_id(avatar_id))

    def __contains__(self, avatar_id: object) -> bool:
        try:
            self.get(str(avatar_id))
        except LibraryError:
            return False
        return True

    def _read(self, avatar_id: str) -> AvatarEntry:
        folder = self.root / avatar_id
        meta_path = folder / META_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AvatarNotFoundError(f"no avatar {avatar_id!r} in the library") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LibraryError(f"avatar {avatar_id!r}: unreadable {META_FILE} ({exc})") from None
        path = folder / AVATAR_FILE
        if not isinstance(meta, dict) or not path.is_file():
            raise LibraryError(f"avatar {avatar_id!r}: incomplete entry (no {AVATAR_FILE})")
        preview = folder / PREVIEW_FILE
        return AvatarEntry(
            id=avatar_id,
            name=str(meta.get("name") or avatar_id),
            created=str(meta.get("created") or ""),
            source=str(meta.get("source") or "file"),
            voice=meta.get("voice") if isinstance(meta.get("voice"), str) else None,
            path=path,
            preview=preview if preview.is_file() else None,
            gaussians=int(meta.get("gaussians") or 0),
            bytes=path.stat().st_size,
            builder=str(meta.get("builder") or ""),
        )

    # --- adding ----------------------------------------------------------------------------------
    def staging_dir(self, prefix: str = "job") -> Path:
        """A new private directory under ``.staging/`` (on the library's file system, so adds are renames)."""
        path = self.root / STAGING / f"{prefix}-{secrets.token_hex(6)}"
        path.mkdir(parents=True)
        return path

    def sweep_staging(self, older_than_s: float = 3600.0) -> int:
        """Remove what interrupted uploads and builds left in ``.staging/`` (the server does this at start).

        Only entries untouched for ``older_than_s`` go: another process (a second server, ``splatcast
        avatar add``) may be using the library right now, and no build runs longer (its timeout is 30 min).
        """
        staging = self.root / STAGING
        removed = 0
        if staging.is_dir():
            now = time.time()
            for child in staging.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if now - child.stat().st_mtime >= older_than_s:
                        shutil.rmtree(child, ignore_errors=True)
                        removed += 1
        return removed

    def new_id(self) -> str:
        while True:
            avatar_id = secrets.token_hex(6)
            if not (self.root / avatar_id).exists():
                return avatar_id

    def add(
        self,
        avatar_file: Path,
        name: str,
        source: str,
        voice: str | None = None,
        preview: Path | None = None,
        avatar_id: str | None = None,
        builder: str = "",
        gaussians: int = 0,
        move: bool = False,
    ) -> AvatarEntry:
        """Put an avatar file (and its preview) into the library under a new id, atomically.

        ``move`` moves the files (they are in this library's staging area);
        otherwise they are copied. Without ``gaussians`` the file is loaded and validated first.
        """
        name = clean_name(name)
        if source not in SOURCE_KINDS or source == "bundled":
            raise LibraryError(f"source must be one of photo, video, file, got {source!r}")
        avatar_id = check_id(avatar_id) if avatar_id is not None else self.new_id()
        if avatar_id == DEFAULT_ID:
            raise ProtectedAvatarError("the id 'default' is the bundled avatar's")
        if not gaussians:
            gaussians = _gaussians_in(avatar_file)
        stage = self.staging_dir("add")
        try:
            place = shutil.move if move else shutil.copyfile
            place(str(avatar_file), str(stage / AVATAR_FILE))
            if preview is not None and preview.is_file():
                place(str(preview), str(stage / PREVIEW_FILE))
            (stage / LOCK_FILE).touch()
            meta = {
                "version": META_VERSION,
                "id": avatar_id,
                "name": name,
                "created": _now_iso(),
                "source": source,
                "voice": voice,
                "gaussians": gaussians,
                "builder": builder,
            }
            write_json_atomic(stage / META_FILE, meta)
            with self._lock:
                target = self.root / avatar_id
                if target.exists():
                    raise LibraryError(f"an avatar {avatar_id!r} already exists")
                os.rename(stage, target)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        logger.info("library: added %s (%r, %s, %d Gaussians)", avatar_id, name, source, gaussians)
        return self.get(avatar_id)

    def update(
        self, avatar_id: str, name: str | None = None, voice: str | Literal[False] | None = False
    ) -> AvatarEntry:
        """Rename an avatar or change its voice (``voice=None``: the server's default; False: unchanged)."""
        if avatar_id == DEFAULT_ID:
            raise ProtectedAvatarError("the bundled default avatar cannot be changed")
        folder = self.root / check_id(avatar_id)
        with self._lock:
            entry = self._read(avatar_id)
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
            if name is not None:
                meta["name"] = clean_name(name)
            if voice is not False:
                meta["voice"] = voice
            write_json_atomic(folder / META_FILE, meta)
        del entry
        return self.get(avatar_id)

    def save_preview(self, avatar_id: str, png: bytes) -> Path:
        """Store a preview PNG for an avatar (atomic); the bundled default's goes to ``.default-preview.png``."""
        target = (
            self.root / ".default-preview.png"
            if avatar_id == DEFAULT_ID
            else self.root / check_id(avatar_id) / PREVIEW_FILE
        )
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_bytes(png)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return target

    def preview_path(self, avatar_id: str) -> Path | None:
        """The preview PNG on disk, or None when there is none yet."""
        if avatar_id == DEFAULT_ID:
            path = self.root / ".default-preview.png"
            default = self.default_entry().path
            fresh = path.is_file() and default.exists() and path.stat().st_mtime >= default.stat().st_mtime
            return path if fresh else None
        return self.get(avatar_id).preview

    # --- use and removal -------------------------------------------------------------------------
    def lease(self, avatar_id: str) -> AvatarLease:
        """Hold an avatar for a session: a shared lock on its lock file until the lease is released."""
        entry = self.get(avatar_id)
        if entry.bundled:
            return AvatarLease(entry, None)  # never removable: nothing to lock
        lock = entry.path.parent / LOCK_FILE
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            raise AvatarNotFoundError(f"no avatar {avatar_id!r} in the library") from None
        fcntl.flock(fd, fcntl.LOCK_SH)
        if not entry.path.is_file():  # removed between get() and the lock
            os.close(fd)
            raise AvatarNotFoundError(f"no avatar {avatar_id!r} in the library")
        return AvatarLease(entry, fd)

    def in_use(self, avatar_id: str) -> bool:
        """Whether any process holds a lease on the avatar."""
        if avatar_id == DEFAULT_ID:
            return False
        lock = self.root / check_id(avatar_id) / LOCK_FILE
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise
        finally:
            os.close(fd)
        return False

    def remove(self, avatar_id: str) -> None:
        """Delete an avatar; refused while a session (in any process) uses it."""
        if avatar_id == DEFAULT_ID:
            raise ProtectedAvatarError("the bundled default avatar cannot be deleted")
        folder = self.root / check_id(avatar_id)
        with self._lock:
            if not (folder / META_FILE).exists():
                raise AvatarNotFoundError(f"no avatar {avatar_id!r} in the library")
            fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise AvatarInUseError(
                            f"avatar {avatar_id!r} is in use by a session; end the session first"
                        ) from None
                    raise
                # rename first (one atomic step: the entry is gone for every reader), then delete
                trash = self.root / STAGING / f"rm-{avatar_id}-{secrets.token_hex(4)}"
                trash.parent.mkdir(parents=True, exist_ok=True)
                os.rename(folder, trash)
            finally:
                os.close(fd)
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("library: removed %s", avatar_id)


def _gaussians_in(path: Path) -> int:
    """Load and validate an avatar file; its Gaussian count. Raises LibraryError if it is not an avatar."""
    from engines.splat.avatar import AvatarFormatError, load_avatar

    try:
        return load_avatar(path).count
    except AvatarFormatError as exc:
        raise LibraryError(f"not a splatcast avatar: {exc}") from None
