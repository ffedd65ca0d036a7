"""The generated HAProxy configuration's routing, with real HAProxy and two small stand-in replicas.

The stand-ins are aiohttp apps that answer like splatcast for the routes under
test (an avatar upload names its build job in ``X-Splatcast-Job``; the job's
routes exist only on the replica that took the upload). Real replicas are in
tests/test_balancer.py; an avatar build there would cost minutes of CPU.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from benchmarks.haproxy_process import HAProxy, haproxy_binary
from realtime.web.haproxy_config import JOB_HEADER, Replica

pytestmark = pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed")


class StandIn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.jobs: set[str] = set()

    async def upload(self, request: web.Request) -> web.Response:
        job = f"{self.name}-{len(self.jobs)}"
        self.jobs.add(job)
        return web.json_response({"job": job}, status=202, headers={JOB_HEADER: job})

    async def job(self, request: web.Request) -> web.Response:
        if request.match_info["job"] not in self.jobs:
            return web.json_response({"error": "no such job"}, status=404)
        return web.json_response({"replica": self.name, "state": "running"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "replica": self.name})


@pytest_asyncio.fixture
async def proxy(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[HAProxy]:
    runners, replicas = [], []
    for name in ("a", "b"):
        stand_in = StandIn(name)
        app = web.Application()
        app.router.add_post("/api/avatars", stand_in.upload)
        app.router.add_get("/api/avatars/jobs/{job}", stand_in.job)
        app.router.add_get("/healthz", stand_in.healthz)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        replicas.append(Replica("127.0.0.1", site._server.sockets[0].getsockname()[1], None))  # type: ignore[union-attr]
    # in threads: the stand-ins answer HAProxy's checks on this event loop meanwhile
    haproxy = await asyncio.to_thread(HAProxy, tmp_path_factory.mktemp("haproxy"), replicas)
    try:
        await asyncio.to_thread(
            haproxy.wait_state, lambda s: all(v.status == "UP" for v in s.values()), 10, "stand-ins not up"
        )
        yield haproxy
    finally:
        haproxy.stop()
        for runner in runners:
            await runner.cleanup()


async def test_avatar_build_jobs_follow_the_replica_that_took_the_upload(proxy: HAProxy) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        jobs = []
        for _ in range(4):  # round robin: the uploads land on both replicas
            async with http.post(f"{proxy.url}/api/avatars", data=b"x") as r:
                assert r.status == 202
                jobs.append((await r.json())["job"])
        assert {job.split("-")[0] for job in jobs} == {"a", "b"}
        for job, _ in itertools.product(jobs, range(3)):  # and every poll reaches the replica that has it
            async with http.get(f"{proxy.url}/api/avatars/jobs/{job}") as r:
                assert r.status == 200, (job, await r.text())
                assert (await r.json())["replica"] == job.split("-")[0]
