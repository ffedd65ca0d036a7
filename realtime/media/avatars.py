"""The avatars a server serves: the library on disk, each loaded avatar with its frame renderer, cached.

:class:`AvatarSet` is built once per process next to the :class:`~realtime.media.engine.Engine`
(whose own avatar is the server's default, id ``default``). A session asks for
an avatar by library id and gets a :class:`SessionAvatar` hold: the avatar,
its :class:`~realtime.media.frame_renderer.FrameRenderer` (shared by every
session showing that avatar, so the scheduler can batch them) and its voice.
While the hold lasts the avatar stays in memory and its files cannot be
deleted (:mod:`engines.library.cache`, :mod:`engines.library.store`); idle
avatars are dropped least-recently-used first once the cache passes its
memory bound (``--avatar-cache-mb``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.library.cache import AvatarCache, CachedAvatar, nbytes_of
from engines.library.store import (
    AVATAR_FILE,
    DEFAULT_ID,
    ID_PATTERN,
    AvatarEntry,
    AvatarLibrary,
    check_id,
    default_library_dir,
)
from realtime.media.frame_renderer import FrameRenderer

logger = logging.getLogger(__name__)


@dataclass
class LoadedAvatar:
    """One avatar in memory, ready to stream."""

    entry: AvatarEntry
    avatar: Any  # engines.splat.avatar.Avatar
    renderer: FrameRenderer
    load_s: float = 0.0


class SessionAvatar:
    """A session's hold on one avatar; :meth:`release` when the session ends (idempotent)."""

    def __init__(self, held: CachedAvatar[LoadedAvatar]) -> None:
        self._held = held
        self.loaded = held.value

    @property
    def id(self) -> str:
        return self.loaded.entry.id

    @property
    def voice(self) -> str | None:
        """The avatar's own voice id (None: the server's default voice)."""
        return self._held.entry.voice

    @property
    def avatar(self) -> Any:
        return self.loaded.avatar

    @property
    def renderer(self) -> FrameRenderer:
        return self.loaded.renderer

    def release(self) -> None:
        self._held.release()


class AvatarSet:
    """Library + cache of loaded avatars for one server process (thread-safe)."""

    def __init__(
        self,
        library: AvatarLibrary,
        size: tuple[int, int],
        backend: Any,
        default: LoadedAvatar | None = None,
        cache_bytes: int = 256 * 1024 * 1024,
        warmup: bool = True,
    ) -> None:
        self.library = library
        self.size = size
        self.backend = backend
        self.warmup = warmup
        self._default = default
        self.default_id = DEFAULT_ID  # what a session that names no avatar gets
        self.cache: AvatarCache[LoadedAvatar] = AvatarCache(library, self._load, nbytes_of, cache_bytes)

    def _load(self, entry: AvatarEntry) -> LoadedAvatar:
        if self._default is not None and entry.id == self._default.entry.id:
            return self._default  # the engine's avatar, loaded and warmed up at start
        from engines.splat.avatar import load_avatar

        t = time.perf_counter()
        avatar = load_avatar(entry.path)
        renderer = FrameRenderer(avatar, self.size, backend=self.backend)
        if self.warmup:
            renderer.warmup()  # numba is compiled already; this draws each ladder level once (the plates)
        loaded = LoadedAvatar(entry, avatar, renderer, time.perf_counter() - t)
        logger.info(
            "avatars: loaded %s (%r, %d Gaussians) in %.2f s",
            entry.id,
            entry.name,
            avatar.count,
            loaded.load_s,
        )
        return loaded

    def acquire(self, avatar_id: str | None) -> SessionAvatar:
        """Hold an avatar for a session (blocking: loads it on first use). ``None``: the default."""
        avatar_id = self.default_id if avatar_id in (None, "") else check_id(str(avatar_id))
        return SessionAvatar(self.cache.acquire(avatar_id))

    def in_use(self, avatar_id: str) -> bool:
        """Held by a session of this process or of another process using the same library."""
        return self.cache.users(avatar_id) > 0 or self.library.in_use(avatar_id)


def attach_library(engine: Any, settings: Any) -> AvatarSet:
    """Give ``engine`` the avatar library of ``settings`` (``--avatars``); its own avatar is ``default``.

    ``--avatar`` may name a library id: sessions that ask for no avatar get that one.
    """
    given = settings.avatar
    own_file = given is not None and Path(given).expanduser().is_file()
    library = AvatarLibrary(settings.avatars, default_avatar=Path(given).expanduser() if own_file else None)
    swept = library.sweep_staging()  # what interrupted uploads and builds left behind
    if swept:
        logger.info("avatars: removed %d interrupted upload(s)/build(s) from %s", swept, library.root)
    entry = library.default_entry() if given is None or own_file else library.get(check_id(str(given)))
    default = LoadedAvatar(entry, engine.avatar, engine.renderer)
    avatars = AvatarSet(
        library,
        engine.renderer.size,
        settings.render_backend,
        default=default,
        cache_bytes=settings.avatar_cache_mb * 1024 * 1024,
    )
    avatars.default_id = entry.id
    engine.avatars = avatars
    return avatars


def resolve_avatar_path(spec: str | Path | None, library_dir: Path | None = None) -> Path | None:
    """A path to an avatar file from a path or a library id (None stays None: the bundled avatar).

    ``splatcast serve --avatar`` and ``SplatAvatarService(avatar=...)`` take either. Reads the library
    without changing it.
    """
    if spec is None:
        return None
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    root = library_dir if library_dir is not None else default_library_dir()
    text = str(spec)
    if ID_PATTERN.fullmatch(text) and (root / text / AVATAR_FILE).is_file():
        return root / text / AVATAR_FILE
    raise FileNotFoundError(
        f"avatar {text!r} does not exist: it is neither a file nor an id in the library at {root} "
        "(`splatcast avatar list` shows the ids)"
    )
