"""The replicas behind the URL a benchmark talks to, found through the sessions it opened.

Behind a balancer written by ``splatcast deploy haproxy``, every session lives
on one replica, and ``?session=ID`` on any route reaches the replica that owns
session ID: ``/healthz?session=ID`` says which replica that is (``replica``),
its capacity and its sessions; ``/metrics?session=ID`` gives its metrics. A
single server is the one replica of itself, reached the same way, so the
benchmarks run one code path whether or not a balancer sits in front.

Only replicas that own one of the benchmark's sessions are seen; ``bench
load`` fills the replicas until none has room, so by then it has seen them all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.metrics_scrape import MetricsError, Scrape, merge_scrapes, parse_metrics

logger = logging.getLogger(__name__)

Get = Callable[[str], Awaitable[tuple[int, str]]]  # path → (status, body); Client.get


@dataclass
class Replica:
    name: str  # what the replica calls itself (host:port)
    capacity: int  # sessions it says it holds at full frame rate (measured per frame, or --capacity)
    sessions: int  # sessions it held when last asked
    via: str  # the id of one of its sessions: the way to reach it through the balancer
    first_scrape: Scrape | None = None  # its /metrics when the benchmark first saw it


class Replicas:
    """Replica of each session, per-replica /healthz and /metrics, and all of them merged."""

    def __init__(self, get: Get) -> None:
        self._get = get
        self.by_name: dict[str, Replica] = {}
        self.owner: dict[str, str] = {}  # session id → replica name

    async def _health(self, session_id: str) -> dict[str, Any]:
        status, body = await self._get(f"/healthz?session={session_id}")
        data = json.loads(body)
        if not isinstance(data, dict) or "capacity" not in data:
            raise ValueError(f"/healthz answered {status} without a capacity: {body[:200]!r}")
        return data

    async def locate(self, session_id: str) -> Replica:
        """The replica that owns ``session_id`` (asked once per session); scraped when first seen."""
        name = self.owner.get(session_id)
        if name is not None:
            return self.by_name[name]
        health = await self._health(session_id)
        name = str(health.get("replica") or "server")
        self.owner[session_id] = name
        replica = self.by_name.get(name)
        if replica is None:
            replica = self.by_name[name] = Replica(
                name, int(health["capacity"]), int(health["sessions"]), session_id
            )
            replica.first_scrape = await self._scrape_one(session_id)
        return replica

    async def refresh(self) -> list[Replica]:
        """Ask every known replica for its capacity and sessions now."""
        for replica in self.by_name.values():
            try:
                health = await self._health(replica.via)
            except (OSError, ValueError) as exc:
                logger.warning("bench: replica %s did not answer /healthz: %s", replica.name, exc)
                continue
            replica.capacity, replica.sessions = int(health["capacity"]), int(health["sessions"])
        return list(self.by_name.values())

    def forget(self, session_id: str) -> None:
        """The session ended: reach its replica through another session, if one is left."""
        name = self.owner.pop(session_id, None)
        if name is None:
            return
        replica = self.by_name[name]
        if replica.via == session_id:
            others = [sid for sid, owner in self.owner.items() if owner == name]
            if others:
                replica.via = others[0]

    async def _scrape_one(self, session_id: str) -> Scrape | None:
        try:
            status, text = await self._get(f"/metrics?session={session_id}")
            return parse_metrics(text) if status == 200 else None
        except (MetricsError, OSError) as exc:
            logger.warning("bench: /metrics unreadable: %s", exc)
            return None

    async def scrape(self) -> dict[str, Scrape]:
        """Every known replica's /metrics now (replicas that do not answer are left out)."""
        out = {}
        for replica in self.by_name.values():
            scrape = await self._scrape_one(replica.via)
            if scrape is not None:
                out[replica.name] = scrape
        return out

    @staticmethod
    def merged(scrapes: dict[str, Scrape]) -> Scrape | None:
        return merge_scrapes(list(scrapes.values())) if scrapes else None

    def summary(self) -> list[dict[str, Any]]:
        return [
            {"replica": r.name, "capacity": r.capacity, "sessions": r.sessions}
            for r in sorted(self.by_name.values(), key=lambda r: r.name)
        ]
