"""Loaded avatars kept in memory under a stated bound; an avatar in use is never evicted.

:class:`AvatarCache` maps a library id to whatever the caller builds from an
avatar file (the server builds the avatar plus its renderer) and keeps those
values in least-recently-used order. ``max_bytes`` bounds the memory of the
values that no session holds: after every release the least recently used
idle values are dropped until the total is within the bound. Values held by
a session are never dropped, so the total exceeds the bound only by avatars
in use at that moment.

Holding a value (:meth:`AvatarCache.acquire`) also holds a library lease
(:meth:`engines.library.store.AvatarLibrary.lease`), so the files of an
avatar in use cannot be deleted either.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from engines.library.store import AvatarEntry, AvatarLease, AvatarLibrary, LibraryError

logger = logging.getLogger(__name__)

V = TypeVar("V")

DEFAULT_CACHE_MB = 256


def nbytes_of(value: Any, _seen: set[int] | None = None) -> int:
    """Bytes held by the numpy arrays reachable from ``value`` (dataclasses, dicts, lists, objects' ``__dict__``)."""
    seen = _seen if _seen is not None else set()
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes_of(v, seen) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(nbytes_of(v, seen) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes_of(getattr(value, f.name), seen) for f in fields(value))
    attrs = getattr(value, "__dict__", None)
    if isinstance(attrs, dict):
        return sum(nbytes_of(v, seen) for v in attrs.values())
    return 0


@dataclass
class _Slot(Generic[V]):
    entry: AvatarEntry
    value: V
    size: int
    users: int = 0
    lease: AvatarLease | None = None


class CachedAvatar(Generic[V]):
    """One session's hold on a cached value; :meth:`release` exactly once (idempotent)."""

    def __init__(self, cache: AvatarCache[V], slot: _Slot[V]) -> None:
        self._cache = cache
        self.entry = slot.entry
        self.value = slot.value
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._cache._release(self.entry.id)

    def __enter__(self) -> CachedAvatar[V]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class AvatarCache(Generic[V]):
    """LRU of loaded avatars with a byte bound on idle ones (thread-safe)."""

    def __init__(
        self,
        library: AvatarLibrary,
        load: Callable[[AvatarEntry], V],
        size_of: Callable[[V], int] = nbytes_of,
        max_bytes: int = DEFAULT_CACHE_MB * 1024 * 1024,
    ) -> None:
        self.library = library
        self._load = load
        self._size_of = size_of
        self.max_bytes = int(max_bytes)
        self._slots: OrderedDict[str, _Slot[V]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    # --- use -------------------------------------------------------------------------------------
    def acquire(self, avatar_id: str) -> CachedAvatar[V]:
        """The loaded value for ``avatar_id`` (loading it if needed; blocking), held until released.

        Raises the library's errors (:class:`~engines.library.store.AvatarNotFoundError`, ...) and
        whatever ``load`` raises for a bad file.
        """
        with self._lock:
            gate = self._loading.setdefault(avatar_id, threading.Lock())
        with gate:  # one load per id at a time; others wait for it and then hit
            with self._lock:
                slot = self._slots.get(avatar_id)
                if slot is not None:
                    if slot.users == 0:
                        try:
                            slot.lease = self.library.lease(avatar_id)
                        except LibraryError:  # deleted (or broken) since it was cached
                            del self._slots[avatar_id]
                            raise
                    slot.users += 1
                    self._slots.move_to_end(avatar_id)
                    self.hits += 1
                    return CachedAvatar(self, slot)
            lease = self.library.lease(avatar_id)
            try:
                value = self._load(lease.entry)
                size = int(self._size_of(value))
            except BaseException:
                lease.release()
                raise
            with self._lock:
                slot = _Slot(lease.entry, value, size, users=1, lease=lease)
                self._slots[avatar_id] = slot
                self.misses += 1
                self._evict_locked()
            logger.info(
                "avatar-cache: loaded %s (%.1f MB; %d cached, %.1f of %.0f MB)",
                avatar_id,
                size / 1e6,
                len(self._slots),
                self.total_bytes / 1e6,
                self.max_bytes / 1e6,
            )
            return CachedAvatar(self, slot)

    def _release(self, avatar_id: str) -> None:
        with self._lock:
            slot = self._slots.get(avatar_id)
            if slot is None or slot.users == 0:
                return
            slot.users -= 1
            if slot.users == 0 and slot.lease is not None:
                slot.lease.release()
                slot.lease = None
            self._evict_locked()

    def _evict_locked(self) -> None:
        for avatar_id in list(self._slots):
            if self.total_bytes <= self.max_bytes:
                return
            slot = self._slots[avatar_id]
            if slot.users == 0:
                del self._slots[avatar_id]
                self.evictions += 1
                logger.info("avatar-cache: evicted %s (%.1f MB)", avatar_id, slot.size / 1e6)

    def discard(self, avatar_id: str) -> bool:
        """Forget an idle cached value (e.g. after its avatar was deleted); False if it is in use."""
        with self._lock:
            slot = self._slots.get(avatar_id)
            if slot is None:
                return True
            if slot.users:
                return False
            del self._slots[avatar_id]
            return True

    # --- introspection ---------------------------------------------------------------------------
    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self._slots.values())

    def users(self, avatar_id: str) -> int:
        """How many holds this process has on ``avatar_id`` right now."""
        with self._lock:
            slot = self._slots.get(avatar_id)
            return slot.users if slot is not None else 0

    def cached_ids(self) -> list[str]:
        """Ids in memory, least recently used first."""
        with self._lock:
            return list(self._slots)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "entries": len(self._slots),
                "in_use": sum(1 for s in self._slots.values() if s.users),
                "bytes": self.total_bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }
