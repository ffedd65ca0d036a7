"""A corpus of hostile SDP offers against a live server, while a real session streams.

``tests/data/sdp/browser_offer.sdp`` is a browser-shaped offer (audio
sendrecv + video recvonly, BUNDLE, ICE, DTLS fingerprint, rtcp-mux) that the
server accepts; every corpus entry below is that offer broken one way, or
junk. Each must get a clean 4xx JSON error, leave no session and no peer
connection behind, and never disturb the session that is streaming.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from servers import hostile_input_server

from benchmarks.metrics_scrape import parse_metrics
from benchmarks.server_process import ServerProcess
from benchmarks.webrtc_client import Client

pytestmark = pytest.mark.slow

BASE = re.sub(r"\r?\n", "\r\n", (Path(__file__).parent / "data" / "sdp" / "browser_offer.sdp").read_text())


def edit(pattern: str, replacement: str, count: int = 0) -> str:
    """The base offer with a regex substitution (MULTILINE)."""
    text, n = re.subn(pattern, replacement, BASE, count=count, flags=re.MULTILINE)
    assert n, f"corpus edit {pattern!r} matched nothing"
    return text


def drop(prefix: str) -> str:
    """The base offer without the lines that start with ``prefix``."""
    return edit(rf"^{re.escape(prefix)}.*\r\n", "")


def video_only(mid: int) -> str:
    """A short video m-section (about 45 bytes: 1000 of them stay under the 64 kB SDP limit)."""
    return f"m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\n"


HEADER = BASE.split("m=audio")[0]

# name -> the "sdp" string sent in {"sdp": ..., "type": "offer"}
CORPUS: dict[str, Callable[[], str]] = {
    "empty": lambda: "",
    "whitespace": lambda: " \r\n\t\r\n",
    "binary": lambda: "".join(chr(b) for b in range(256)) * 4,
    "nul bytes": lambda: "v=0\x00\x00\r\n" + BASE.replace("\r\n", "\x00\r\n"),
    "huge": lambda: BASE + "a=x-padding:" + "A" * 70_000 + "\r\n",
    "not sdp (json)": lambda: '{"v": 0}',
    "version 1": lambda: edit(r"^v=0", "v=1", 1),
    "no media": lambda: HEADER,
    "no ice-ufrag": lambda: drop("a=ice-ufrag:"),
    "no ice-pwd": lambda: drop("a=ice-pwd:"),
    "no fingerprint": lambda: drop("a=fingerprint:"),
    "unknown fingerprint algorithm": lambda: edit(r"^a=fingerprint:sha-256 ", "a=fingerprint:sha-999 "),
    "wrong codecs only": lambda: edit(r"VP8/90000", "H265/90000").replace("apt=96", "apt=95"),
    "absurd port": lambda: edit(r"^m=video 9 ", "m=video 99999999999999999999999 "),
    "negative port": lambda: edit(r"^m=audio 9 ", "m=audio -7 "),
    "absurd payload type": lambda: edit(r" 96 97\r\n", " 4294967296 97\r\n"),
    "1000 m-lines": lambda: (
        edit(r"^a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1") + "".join(video_only(k) for k in range(2, 1002))
    ),
    "non-utf-8 (latin-1 read as text)": lambda: BASE.replace("s=-", "s=\xe9t\xe9 \udcff"),
    "injected crlf": lambda: edit(r"^a=mid:1", "a=mid:1\r\nHTTP/1.1 200 OK\r\nX-Injected: yes\r\n\r\n"),
    "bare cr line endings": lambda: BASE.replace("\r\n", "\r"),
    "duplicate mids": lambda: edit(r"^a=mid:1", "a=mid:0").replace("BUNDLE 0 1", "BUNDLE 0 0"),
    "candidate junk": lambda: edit(
        r"^a=candidate:.*", "a=candidate:\u2603 one udp lots 999.999.1.1 port typ ghost"
    ),
    "data channel only": lambda: (
        HEADER.replace("BUNDLE 0 1", "BUNDLE 0")
        + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
        "a=ice-ufrag:Fx3k\r\na=ice-pwd:kCs5PqNfW1bzYLOuQ8mHh2Tv\r\na=fingerprint:"
        + BASE.split("a=fingerprint:")[1].split("\r\n")[0]
        + "\r\na=setup:actpass\r\na=sctp-port:5000\r\n"
    ),
    "audio only": lambda: BASE.split("m=video")[0].replace("BUNDLE 0 1", "BUNDLE 0"),
    "bundle names unknown mids": lambda: edit(r"^a=group:BUNDLE 0 1", "a=group:BUNDLE 7 8 9"),
    "no rtcp-mux": lambda: drop("a=rtcp-mux"),
    "ice-ufrag 20 kB": lambda: edit(r"^a=ice-ufrag:Fx3k", "a=ice-ufrag:" + "u" * 20_000, 1),
    "ice-ufrag 2 chars": lambda: edit(r"^a=ice-ufrag:Fx3k", "a=ice-ufrag:Fx"),
    "ice-pwd markup": lambda: edit(r"^a=ice-pwd:.*", 'a=ice-pwd:kCs5PqNfW1bzYLOu"<script>x</script>'),
    "m-line without port or proto": lambda: edit(r"^m=video .*", "m=video"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with hostile_input_server(tmp_path_factory.mktemp("avatar")) as srv:
        yield srv


def peer_connections(metrics: str) -> int:
    count = parse_metrics(metrics).gauges.get("splatcast_peer_connections")
    assert count is not None, "no splatcast_peer_connections gauge in /metrics"
    return int(count)


async def test_the_base_offer_is_accepted(server: ServerProcess) -> None:
    """The control: without this the corpus could be refusing everything for one boring reason."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.base}/api/offer", json={"sdp": BASE, "type": "offer"}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert body["sdp"].startswith("v=0") and "m=video" in body["sdp"]
        async with http.delete(
            f"{server.base}/api/sessions/{body['session_id']}",
            headers={"Authorization": f"Bearer {body['token']}"},
        ) as resp:
            assert resp.status == 200


async def test_every_hostile_offer_gets_a_4xx_and_the_live_session_keeps_streaming(
    server: ServerProcess,
) -> None:
    async with Client(server.base) as client:
        await client.wait_video(5)
        status, metrics = await client.get("/metrics")
        assert status == 200
        pcs_before = peer_connections(metrics)
        outcomes: dict[str, tuple[int, str]] = {}
        async with aiohttp.ClientSession() as http:
            for name, make in CORPUS.items():
                async with http.post(
                    f"{server.base}/api/offer", json={"sdp": make(), "type": "offer"}
                ) as resp:
                    body = await resp.json()
                    outcomes[name] = (resp.status, str(body.get("error", body))[:120])
            # and the same through the transport: a raw body that is not UTF-8 and one over the body limit
            for name, raw in {
                "raw latin-1 body": b'{"sdp": "v=0\r\n\xe9\xff", "type": "offer"}',
                "raw 1 MB body": b'{"sdp": "' + b"v" * 1_000_000 + b'", "type": "offer"}',
            }.items():
                async with http.post(
                    f"{server.base}/api/offer", data=raw, headers={"Content-Type": "application/json"}
                ) as resp:
                    body = await resp.json()
                    outcomes[name] = (resp.status, str(body.get("error", body))[:120])
            async with http.get(f"{server.base}/api/sessions") as resp:
                sessions = await resp.json()

        wrong = {name: out for name, out in outcomes.items() if out[0] not in (400, 413)}
        assert not wrong, wrong
        assert outcomes["huge"][0] == 413 and outcomes["raw 1 MB body"][0] == 413
        assert [s["id"] for s in sessions] == [client.session_id]  # no session left behind
        status, metrics = await client.get("/metrics")
        assert peer_connections(metrics) == pcs_before  # every refused offer's peer connection was closed
        assert not [line for line in server.log if "ERROR" in line and "realtime.web.server" in line]
        before = len(client.rx.video_t)
        await asyncio.sleep(2.0)
        assert len(client.rx.video_t) >= before + 20, "the live session stopped receiving frames"
