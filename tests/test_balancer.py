"""Replicas behind a real HAProxy: capacity-aware spreading, cookie-less affinity, drain, failure.

Three ``splatcast serve`` replicas on loopback (synthetic avatar, small
video, real aiortc sessions and the real conversation loop), each with
``--agent-port`` and ``--trusted-proxies 127.0.0.1``, behind Debian's HAProxy
started from the configuration ``splatcast deploy haproxy`` writes (checks
every 0.5 s instead of the shipped 1 s): replica 1 with ``--capacity 1``,
replicas 2 and 3 with ``--capacity 2``.

The tests run in order on one cluster (a replica takes ~15 s to start on 2
cores), each leaving it in the state the next one starts from:

1. five sessions spread over the replicas by free capacity (HAProxy's weights
   follow each replica's free share); the full ``--capacity 1`` replica gets
   no more; a sixth is refused (503, JSON, Retry-After); each owner's
   /api/sessions and log name the real client address; ``?session=ID``
   reaches each session's replica (what the benchmarks use);
2. say / interrupt / emotion / the events websocket / DELETE reach the owning
   replica through HAProxy, with no cookie anywhere;
3. SIGTERM on replica 2: it turns to ``drain``, its sessions go on (frames,
   ``say`` through HAProxy) until the end of the drain, a new session goes to
   replica 3, and replica 1's session loses nothing;
4. SIGKILL on replica 3: only its sessions end, HAProxy marks it down within
   the bound its checks promise, replica 1's session never notices;
5. behind HAProxy with ``--trusted-proxies``: two client addresses get
   separate rate-limit buckets, a forged header from an untrusted peer (or
   through HAProxy) is ignored, and Retry-After is rounded up.

Every client connects from its own loopback address (127.0.0.x), so each is
a different user to the per-address offer limit, which is tight here (4 a
minute, bursts of 1) for test 5 to see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from benchmarks.haproxy_process import HAProxy, ServerState, haproxy_binary, wait_until
from benchmarks.replicas import Replicas
from benchmarks.server_process import ServerProcess, free_port
from benchmarks.webrtc_client import Client
from engines.splat.synthetic import write_synthetic_avatar
from realtime.web.haproxy_config import Replica

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),  # sessions live across the tests: one event loop for all
    pytest.mark.skipif(
        haproxy_binary() is None, reason="haproxy is not installed (scripts/install-system-deps.sh)"
    ),
]

SIZE = 128
DRAIN_S = 8  # replica 2's drain in test 3
OFFER_RATE = 4  # new sessions per client address per minute on each replica: a burst of 1, then one per 15 s
CHECK_INTER_S = 0.5  # HAProxy's health and agent checks
FALL = 2  # failed health checks before HAProxy marks a replica down (the template's "fall 2")
# what HAProxy's checks promise for a replica that dies: FALL failed checks CHECK_INTER_S apart, after the
# check in flight; plus scheduling slack on a busy 2-core box. Not a performance figure: a bound of the config.
MARK_DOWN_BOUND_S = (FALL + 1) * CHECK_INTER_S + 2.0
TRUSTED = "127.0.0.1/32"  # HAProxy reaches the replicas from 127.0.0.1


@dataclass
class Member:
    name: str  # HAProxy's name for it: replica1, ...
    capacity: int
    server: ServerProcess
    agent_port: int

    @property
    def alive(self) -> bool:
        return self.server.proc.poll() is None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.server.base}{path}", timeout=10) as resp:
            return json.loads(resp.read())

    def session_ids(self) -> set[str]:
        return {s["id"] for s in self.get("/api/sessions")}


@dataclass
class Session:
    client: Client
    owner: str
    source: str


@dataclass
class Cluster:
    members: list[Member]
    proxy: HAProxy
    sessions: dict[str, Session] = field(default_factory=dict)
    _addresses: Iterator[int] = field(default_factory=lambda: iter(range(10, 250)))

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def next_address(self) -> str:
        return f"127.0.0.{next(self._addresses)}"

    def owner_of(self, session_id: str) -> str:
        owners = [m.name for m in self.members if m.alive and session_id in m.session_ids()]
        assert len(owners) == 1, f"session {session_id} is on {owners}"
        return owners[0]

    def on(self, name: str) -> list[str]:
        return [label for label, s in self.sessions.items() if s.owner == name]

    async def connect(self, label: str) -> Session:
        """A browser-like session through HAProxy: offer, media, the events websocket."""
        source = self.next_address()
        client = Client(self.proxy.url, source_address=source)
        await client.connect()
        client.watch_events()
        await client.wait_video(5, timeout=60)
        assert client.session_id is not None
        session = Session(client, self.owner_of(client.session_id), source)
        self.sessions[label] = session
        return session


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Member]]:
    workdir = tmp_path_factory.mktemp("replicas")
    avatar = workdir / "synthetic.safetensors"
    write_synthetic_avatar(avatar)
    env = {
        **os.environ,
        "SPLATCAST_OFFER_RATE_PER_MINUTE": str(OFFER_RATE),
        "SPLATCAST_DRAIN_S": str(DRAIN_S),
    }
    members: list[Member] = []
    try:
        for i, capacity in enumerate((1, 2, 2), start=1):
            agent = free_port()
            server = ServerProcess(
                "--avatar", str(avatar), "--size", str(SIZE), "--capacity", str(capacity),
                "--agent-port", str(agent), "--trusted-proxies", TRUSTED,
                env=env,
            )  # fmt: skip
            members.append(Member(f"replica{i}", capacity, server, agent))
        for m in members:  # started together: they load their models side by side
            m.server.wait_ready()
        yield members
    finally:
        for m in members:
            if m.alive:
                assert m.server.stop() == 0, "".join(m.server.log[-30:])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(members: list[Member], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    replicas = [Replica("127.0.0.1", m.server.port, m.agent_port) for m in members]
    proxy = HAProxy(
        tmp_path_factory.mktemp("haproxy"), replicas, check_inter_s=CHECK_INTER_S, agent_inter_s=CHECK_INTER_S
    )
    cluster = Cluster(members, proxy)
    try:
        proxy.wait_state(lambda s: all(_up(v, 100) for v in s.values()), 20, "replicas not all up at 100 %")
        yield cluster
    finally:
        for s in cluster.sessions.values():
            with contextlib.suppress(Exception):
                await s.client.close(delete=False)
        proxy.stop()


def _up(state: ServerState, weight: int) -> bool:
    return state.status == "UP" and state.weight == weight


def _draining(state: ServerState) -> bool:
    return state.status.startswith("DRAIN")


async def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    await asyncio.to_thread(wait_until, check, timeout, what)


async def _wait_state(
    cluster: Cluster, predicate: Callable[[dict[str, ServerState]], bool], what: str
) -> dict[str, ServerState]:
    return await asyncio.to_thread(cluster.proxy.wait_state, predicate, 15, what)


def _http(source: str) -> aiohttp.ClientSession:
    """A client from ``source`` that keeps no cookies (API clients need none)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(source, 0)), cookie_jar=aiohttp.DummyCookieJar()
    )


async def _request(
    method: str, url: str, source: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    async with _http(source) as http, http.request(method, url, json=body, headers=headers or {}) as r:
        text = await r.text()
        return r.status, dict(r.headers), json.loads(text) if text else None


def _frames_between(client: Client, t0: float, t1: float) -> list[int]:
    """Video frames received in each whole second of [t0, t1)."""
    bins = [0] * max(1, int(t1 - t0))
    for t in client.rx.video_t:
        if t0 <= t < t0 + len(bins):
            bins[int(t - t0)] += 1
    return bins


# --- 1. spreading by free capacity ------------------------------------------------------------------
async def test_new_sessions_spread_by_free_capacity(cluster: Cluster) -> None:
    replica1_requests: int | None = None  # what HAProxy had sent replica 1 when it drained (full)
    for i in range(5):
        session = await cluster.connect(f"s{i}")
        owner = cluster.member(session.owner)
        held = len(owner.session_ids())
        assert held <= owner.capacity
        # HAProxy's weight follows the owner's free share: 1 of 2 free -> 50 %; none free -> drain
        if held == owner.capacity:
            await _wait_state(
                cluster, lambda s, n=owner.name: _draining(s[n]), f"{owner.name} (full) not drained"
            )
        else:
            share = round(100 * (owner.capacity - held) / owner.capacity)
            await _wait_state(
                cluster, lambda s, n=owner.name, w=share: _up(s[n], w), f"{owner.name} not at {share} %"
            )
        if owner.name == "replica1":
            replica1_requests = cluster.proxy.state()["replica1"].total
    per_replica = {m.name: len(m.session_ids()) for m in cluster.members}
    assert per_replica == {"replica1": 1, "replica2": 2, "replica3": 2}
    state = await _wait_state(
        cluster, lambda s: all(_draining(v) for v in s.values()), "full replicas not drained"
    )
    # the full replica got no request at all after it drained (its session's websocket opened before)
    assert state["replica1"].total == replica1_requests
    # a sixth session: nobody has room; HAProxy answers in the API's shape, with Retry-After
    status, headers, body = await _request(
        "POST", f"{cluster.proxy.url}/api/offer", cluster.next_address(), {"sdp": "v=0", "type": "offer"}
    )
    assert status == 503 and int(headers["Retry-After"]) >= 1 and "error" in body
    assert cluster.proxy.state()["replica1"].total == replica1_requests
    # full is not down: the page and its reads still load (from any live replica), so a browser can say
    # "full, try again in N s" instead of showing an error page
    for path, kind in (
        ("/", "text/html"),
        ("/api/config", "application/json"),
        ("/static/app.js", "javascript"),
    ):
        async with _http(cluster.next_address()) as http, http.get(f"{cluster.proxy.url}{path}") as r:
            assert r.status == 200 and kind in r.headers["Content-Type"], (path, r.status)
    # each owner names the real client (X-Forwarded-For from its trusted proxy), in the API and its log
    for session in cluster.sessions.values():
        owner = cluster.member(session.owner)
        (info,) = [s for s in owner.get("/api/sessions") if s["id"] == session.client.session_id]
        assert info["client"] == session.source
        assert any(
            f"{session.client.session_id}: created for {session.source}" in line for line in owner.server.log
        )


async def test_benchmarks_find_each_sessions_replica_through_the_balancer(cluster: Cluster) -> None:
    """What bench load/latency --url rely on: ?session=ID reaches the replica that owns session ID."""
    probe = Client(cluster.proxy.url, source_address=cluster.next_address())
    try:
        replicas = Replicas(probe.get)
        for session in cluster.sessions.values():
            assert session.client.session_id is not None
            found = await replicas.locate(session.client.session_id)
            assert found.name == cluster.member(session.owner).get("/healthz")["replica"]
        assert sorted((r["capacity"], r["sessions"]) for r in replicas.summary()) == [(1, 1), (2, 2), (2, 2)]
        scrapes = await replicas.scrape()
        assert len(scrapes) == 3  # each replica's own /metrics, even though every one of them is full
        merged = Replicas.merged(scrapes)
        assert merged is not None and merged.gauges["splatcast_sessions"] == 5
        assert merged.gauges["splatcast_capacity"] == 5
    finally:
        await probe.close()


# --- 2. affinity without cookies --------------------------------------------------------------------
async def test_session_routes_reach_their_replica_without_cookies(cluster: Cluster) -> None:
    url = cluster.proxy.url
    one_per_replica = {s.owner: label for label, s in cluster.sessions.items()}
    assert sorted(one_per_replica) == ["replica1", "replica2", "replica3"]
    async with _http(cluster.next_address()) as http:  # one keep-alive connection for all of them
        for owner, label in sorted(one_per_replica.items()):
            s = cluster.sessions[label].client
            auth = {"Authorization": f"Bearer {s.token}"}
            base = f"{url}/api/sessions/{s.session_id}"
            async with http.ws_connect(f"{base}/events", params={"token": s.token or ""}) as ws:
                first = await ws.receive_json(timeout=10)
                assert first["type"] == "state"
                async with http.post(
                    f"{base}/say", json={"text": "Hello from behind the balancer."}, headers=auth
                ) as r:
                    assert r.status == 202, await r.text()
                    assert "Set-Cookie" not in r.headers
                await _expect_event(ws, "utterance_start", owner)
                async with http.post(f"{base}/emotion", json={"name": "happy"}, headers=auth) as r:
                    assert r.status == 200, await r.text()
                async with http.post(f"{base}/interrupt", headers=auth) as r:
                    assert r.status == 200, await r.text()
                await _expect_event(ws, "interrupted", owner)
        assert len(http.cookie_jar) == 0
    # the control: the same request sent straight to another replica is a 404 there
    s0 = cluster.sessions[one_per_replica["replica1"]].client
    status, _, _ = await _request(
        "POST",
        f"{cluster.member('replica2').server.base}/api/sessions/{s0.session_id}/say",
        cluster.next_address(),
        {"text": "hi"},
        {"Authorization": f"Bearer {s0.token}"},
    )
    assert status == 404
    # DELETE through HAProxy ends the session on its owner (replica 3 keeps one)
    label = cluster.on("replica3")[-1]
    gone = cluster.sessions.pop(label).client
    status, headers, _ = await _request(
        "DELETE", f"{url}/api/sessions/{gone.session_id}", cluster.next_address(), headers=gone.auth
    )
    assert status == 200 and "Set-Cookie" not in headers
    assert gone.session_id not in cluster.member("replica3").session_ids()
    await _wait(lambda: any(e.get("type") == "closed" for _, e in gone.rx.events), 10, "no closed event")
    await gone.close(delete=False)
    await _wait_state(cluster, lambda s: _up(s["replica3"], 50), "replica3 not back at 50 % after DELETE")


async def _expect_event(ws: aiohttp.ClientWebSocketResponse, kind: str, owner: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        event = await ws.receive_json(timeout=deadline - time.monotonic())
        if event.get("type") == kind:
            return
    pytest.fail(f"no {kind} event from {owner}'s session")


# --- 3. SIGTERM: drain --------------------------------------------------------------------------------
async def test_sigterm_drains_one_replica_and_no_one_else_notices(cluster: Cluster) -> None:
    draining = cluster.member("replica2")
    theirs = [cluster.sessions[label] for label in cluster.on("replica2")]
    ours = cluster.sessions[cluster.on("replica1")[0]]
    assert len(theirs) == 2
    t0 = time.monotonic()
    draining.server.proc.send_signal(signal.SIGTERM)
    await _wait_state(cluster, lambda s: _draining(s["replica2"]), "replica2 not drained after SIGTERM")
    # its sessions go on: media flows, and their routes still reach it (HAProxy keeps a draining
    # server for the sessions that stick to it)
    await asyncio.sleep(1.0)
    for s in theirs:
        status, _ = await s.client.post("say", {"text": "Still here while the server drains."})
        assert status == 202
    # a new session goes elsewhere: replica 3 is the one with room
    newcomer = await cluster.connect("after-sigterm")
    assert newcomer.owner == "replica3"
    # the drained replica's sessions end when the drain does, not before, and it exits cleanly
    await _wait(lambda: not draining.alive, DRAIN_S + 30, "replica2 did not exit after its drain")
    assert draining.server.proc.returncode == 0, "".join(draining.server.log[-30:])
    for s in theirs:
        closed = [t for t, e in s.client.rx.events if e.get("type") == "closed"]
        assert closed, "a drained session got no closed event"
        assert closed[0] - t0 >= DRAIN_S * 0.9, f"closed {closed[0] - t0:.1f} s after SIGTERM"
        assert _frames_between(s.client, t0, t0 + DRAIN_S * 0.9).count(0) == 0, (
            "media stopped during the drain"
        )
        cluster.sessions.pop(next(label for label, x in cluster.sessions.items() if x is s))
        await s.client.close(delete=False)
    # replica 1's session lost nothing: frames every second, still connected, still answering
    t1 = time.monotonic()
    assert _frames_between(ours.client, t0, t1).count(0) == 0
    (info,) = cluster.member("replica1").get("/api/sessions")
    assert info["id"] == ours.client.session_id and info["connection"] == "connected"
    status, _ = await ours.client.post("say", {"text": "Nothing happened here."})
    assert status == 202
    await _wait_state(
        cluster, lambda s: s["replica2"].status.startswith("DOWN"), "replica2 not down after exit"
    )


# --- 4. SIGKILL: failure --------------------------------------------------------------------------------
async def test_sigkill_ends_only_that_replicas_sessions(cluster: Cluster) -> None:
    victim = cluster.member("replica3")
    theirs = [cluster.sessions[label] for label in cluster.on("replica3")]
    ours = cluster.sessions[cluster.on("replica1")[0]]
    assert theirs
    t0 = time.monotonic()
    victim.server.proc.send_signal(signal.SIGKILL)
    await _wait_state(cluster, lambda s: s["replica3"].status.startswith("DOWN"), "replica3 not marked down")
    marked_down_s = time.monotonic() - t0
    print(f"\nHAProxy marked the killed replica down after {marked_down_s:.2f} s")
    assert marked_down_s <= MARK_DOWN_BOUND_S
    # its sessions are gone: their routes reach no one that knows them
    for s in theirs:
        status, _ = await s.client.post("say", {"text": "Anyone there?"})
        assert status in (404, 503)
    await asyncio.sleep(2.0)
    t1 = time.monotonic()
    assert _frames_between(ours.client, t0, t1).count(0) == 0, "replica 1's session stalled"
    status, _ = await ours.client.post("say", {"text": "Still fine."})
    assert status == 202
    for s in theirs:
        cluster.sessions.pop(next(label for label, x in cluster.sessions.items() if x is s))
        await s.client.close(delete=False)


# --- 5. trusted proxies ------------------------------------------------------------------------------
async def test_client_addresses_behind_a_trusted_proxy(cluster: Cluster, tmp_path: Path) -> None:
    target = cluster.member("replica1")  # alive, full: the limit is checked before anything else
    # a balancer with this one replica and no agent check (a full replica would be drained away)
    single = await asyncio.to_thread(
        HAProxy, tmp_path / "single", [Replica("127.0.0.1", target.server.port, None)], CHECK_INTER_S
    )
    try:
        offer = f"{single.url}/api/offer"
        # client A (127.0.0.2): its one new session of the burst, then the limit
        status, _, body = await _request(
            "POST", offer, "127.0.0.2", {}
        )  # past the limit: refused for its body
        assert (status, body) == (400, {"error": "missing field 'sdp'"})
        status, headers, _ = await _request("POST", offer, "127.0.0.2", {})
        assert status == 429
        # rounded up: the next token is 15 s minus the time since the last one away; 14 would be too early
        assert headers["Retry-After"] == str(60 // OFFER_RATE)
        # client B (127.0.0.3) has its own bucket
        status, _, body = await _request("POST", offer, "127.0.0.3", {})
        assert (status, body) == (400, {"error": "missing field 'sdp'"})
        # B cannot pose as someone else through HAProxy: it appends the real peer after the forged value
        status, _, _ = await _request("POST", offer, "127.0.0.3", {}, {"X-Forwarded-For": "127.0.0.99"})
        assert status == 429
        # an untrusted peer talking to the replica directly: its header is ignored, its own address counts
        direct = f"{target.server.base}/api/offer"
        status, _, body = await _request("POST", direct, "127.0.0.4", {}, {"X-Forwarded-For": "127.0.0.5"})
        assert (status, body) == (400, {"error": "missing field 'sdp'"})
        status, _, _ = await _request("POST", direct, "127.0.0.4", {}, {"X-Forwarded-For": "127.0.0.6"})
        assert status == 429
    finally:
        single.stop()
