"""How long HAProxy takes to mark a killed replica down, with the shipped check intervals.

Starts N+1 local replicas (synthetic avatar, small video, ``--capacity 1``)
behind HAProxy configured as ``splatcast deploy haproxy`` writes it (health
and agent checks every 1 s, down after 2 failures), opens one real session
per replica through HAProxy, then SIGKILLs N of them one at a time. For each
kill it records the time until HAProxy's runtime API says DOWN, and checks
that the sessions still alive kept receiving video. Prints one JSON object.

    python scripts/failover_time.py [--kills 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.haproxy_process import HAProxy  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.server_process import ServerProcess, free_port  # noqa: E402
from benchmarks.webrtc_client import Client  # noqa: E402
from engines.splat.synthetic import write_synthetic_avatar  # noqa: E402
from realtime.web.haproxy_config import HAProxyConfig, Replica  # noqa: E402


async def run(kills: int, workdir: Path) -> dict[str, object]:
    avatar = workdir / "synthetic.safetensors"
    write_synthetic_avatar(avatar)
    env = {**os.environ, "SPLATCAST_LOG_LEVEL": "WARNING"}
    servers, members = [], []
    for _ in range(kills + 1):
        agent = free_port()
        args = ["--avatar", str(avatar), "--size", "128", "--capacity", "1", "--agent-port", str(agent)]
        servers.append(ServerProcess(*args, "--trusted-proxies", "127.0.0.1/32", env=env))
        members.append(Replica("127.0.0.1", servers[-1].port, agent))
    shipped = HAProxyConfig()
    proxy = None
    clients: list[Client] = []
    try:
        for server in servers:
            server.wait_ready()
        proxy = HAProxy(
            workdir / "haproxy",
            members,
            check_inter_s=shipped.check_inter_s,
            agent_inter_s=shipped.agent_inter_s,
        )
        proxy.wait_state(
            lambda s: all(v.status == "UP" and v.weight == 100 for v in s.values()), 30, "not up"
        )
        by_port: dict[int, Client] = {}
        for i in range(len(servers)):
            client = Client(proxy.url, source_address=f"127.0.0.{10 + i}")
            await client.connect()
            client.watch_events()
            await client.wait_video(5, timeout=60)
            owner = next(s for s in servers if client.session_id in _ids(s))
            by_port[owner.port] = client
            clients.append(client)
        names = {m.port: f"replica{i}" for i, m in enumerate(members, start=1)}
        results = []
        for victim in servers[:kills]:
            name = names[victim.port]
            others = [c for port, c in by_port.items() if port != victim.port and _alive(servers, port)]
            t0 = time.monotonic()
            victim.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(
                proxy.wait_state, lambda s, n=name: s[n].status.startswith("DOWN"), 30, ""
            )
            down_s = time.monotonic() - t0
            await asyncio.sleep(2.0)
            t1 = time.monotonic()
            stalled = [c.session_id for c in others if not [t for t in c.rx.video_t if t > t1 - 1.0]]
            results.append({"replica": name, "marked_down_s": round(down_s, 3), "others_stalled": stalled})
            victim.proc.wait()
        downs = [r["marked_down_s"] for r in results]
        return {
            "what": "SIGKILL of a replica -> HAProxy marks it DOWN (runtime API), shipped intervals",
            "check_inter_s": shipped.check_inter_s,
            "agent_inter_s": shipped.agent_inter_s,
            "fall": 2,
            "kills": results,
            "marked_down_s_median": statistics.median(downs),
            "marked_down_s_max": max(downs),
            "machine": machine_info(),
        }
    finally:
        for client in clients:
            await client.close(delete=False)
        if proxy is not None:
            proxy.stop()
        for server in servers:
            if server.proc.poll() is None:
                server.stop()


def _ids(server: ServerProcess) -> set[str]:
    import urllib.request

    with urllib.request.urlopen(f"{server.base}/api/sessions", timeout=10) as resp:
        return {s["id"] for s in json.loads(resp.read())}


def _alive(servers: list[ServerProcess], port: int) -> bool:
    return any(s.port == port and s.proc.poll() is None for s in servers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="splatcast-failover-") as tmp:
        result = asyncio.run(run(args.kills, Path(tmp)))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
