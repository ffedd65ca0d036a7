"""API fuzzing: schemathesis cases from the live server's own /openapi.json, while a real session streams.

A real ``splatcast serve`` subprocess (synthetic avatar at 160 px to spare the
2-core box) and one real aiortc client receiving its video. Schemathesis
generates requests for every operation the server describes, both fitting the
schema (positive) and breaking it (negative); session routes are called both
with random ids and with the live session's id and token (never DELETE with
those: that would end the session under test). No response may be a 5xx, every
4xx must be the JSON ``{"error": ...}`` the spec promises, the server must
stay up and the live session must keep receiving frames.

The number of examples is bounded (``EXAMPLES`` per operation and mode) and
generation is derandomised, so CI runs the same ~150 cases every time; set
``SPLATCAST_FUZZ_EXAMPLES`` and ``SPLATCAST_FUZZ_RANDOM=1`` to search longer.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from servers import hostile_input_server

from benchmarks.server_process import ServerProcess
from benchmarks.webrtc_client import Client

pytestmark = [
    pytest.mark.slow,
    # schemathesis' own strategies draw from `random` (its warning, not ours)
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

EXAMPLES = int(os.environ.get("SPLATCAST_FUZZ_EXAMPLES", "8"))
RANDOM = os.environ.get("SPLATCAST_FUZZ_RANDOM") == "1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with hostile_input_server(tmp_path_factory.mktemp("avatar")) as srv:
        yield srv


def server_errors(server: ServerProcess) -> list[str]:
    """The server's log lines for requests that failed inside a handler (the 500 path)."""
    return [line for line in server.log if "ERROR" in line and "realtime.web.server" in line]


class Findings:
    """What the fuzzer saw: one line per bad response, and how many calls it made."""

    def __init__(self) -> None:
        self.bad: list[str] = []
        self.calls = 0
        self.statuses: dict[int, int] = {}
        self.skipped: list[str] = []


def fuzz(base: str, session_id: str, session_token: str) -> Findings:
    """Run every operation of the server's /openapi.json through schemathesis (blocking; run in a thread)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    findings = Findings()
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    http = requests.Session()
    live = {"id": session_id}
    auth = {"Authorization": f"Bearer {session_token}"}

    for result in schema.get_all_operations():
        operation = result.ok()
        has_id = any(p.name == "id" for p in operation.path_parameters)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies = [operation.as_strategy(generation_mode=mode)]
            if has_id and operation.method.upper() != "DELETE":
                strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=live))

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=not RANDOM,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=st.one_of(strategies))
            def run(case: Any) -> None:
                headers = (
                    auth if case.path_parameters and case.path_parameters.get("id") == session_id else None
                )
                try:
                    response = case.call(base_url=base, session=http, headers=headers, timeout=15)
                except requests.RequestException as exc:
                    findings.bad.append(f"{case.method} {case.formatted_path}: no response ({exc})")
                    return
                findings.calls += 1
                findings.statuses[response.status_code] = findings.statuses.get(response.status_code, 0) + 1
                where = f"{case.method} {case.formatted_path} body={str(case.body)[:80]!r}"
                if response.status_code >= 500 and not (
                    response.status_code == 503 and "Retry-After" in response.headers
                ):
                    findings.bad.append(f"{where}: {response.status_code} {response.text[:200]}")
                elif 400 <= response.status_code < 500:
                    try:
                        body = response.json()
                    except ValueError:
                        body = None
                    if not (isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]):
                        findings.bad.append(f"{where}: {response.status_code} without a JSON error")
                if headers is not None and case.path.endswith("/say"):
                    http.post(f"{base}/api/sessions/{session_id}/interrupt", headers=auth, timeout=15)

            try:
                run()
            except Unsatisfiable:  # nothing to break in an operation without parameters or body
                findings.skipped.append(f"{operation.method.upper()} {operation.path} {mode.value}")
    return findings


async def test_fuzzed_requests_get_no_5xx_and_the_live_session_keeps_streaming(server: ServerProcess) -> None:
    async with Client(server.base) as client:
        await client.wait_video(5)
        assert client.session_id and client.token
        started = time.monotonic()
        findings = await asyncio.to_thread(fuzz, server.base, client.session_id, client.token)
        took = time.monotonic() - started
        assert not findings.bad, "\n".join(findings.bad[:20])
        assert findings.calls >= 60, findings.calls
        assert server.health()["status"] == "ok"
        assert not server_errors(server)
        assert client.session_id in {
            s["id"] for s in requests.get(f"{server.base}/api/sessions", timeout=10).json()
        }
        before = len(client.rx.video_t)
        await asyncio.sleep(2.0)
        assert len(client.rx.video_t) >= before + 20, "the live session stopped receiving frames"
        print(f"fuzz: {findings.calls} calls in {took:.1f} s, statuses {sorted(findings.statuses.items())}")


# --------------------------------------------------------------------------- raw bodies

# Found by this file: a body nested a few thousand deep was a 500 (RecursionError in json.loads), and a
# JSON "\\ud800" escape put a lone surrogate into the text, accepted with 202 and failing later in Piper.
HOSTILE_BODIES = [
    b"[" * 5000 + b"]" * 5000,
    b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"text": "\\ud800"}',
    b'{"text": "ok \\udfff"}',
    b'{"name": "happy", "intensity": NaN}',
    b'{"name": "happy", "intensity": -Infinity}',
    b'{"name": "happy", "intensity": 1e400}',
    b'{"sdp": "\\ud800", "type": "offer"}',
    b'{"sdp": "v=0\\r\\n", "type": "offer", "sdp": 1}',
    b"1e999999",
    b"\xef\xbb\xbf{}",  # a UTF-8 byte-order mark
    b"",
]


def json_values() -> Any:
    from hypothesis import strategies as st

    text = st.text(st.characters(categories=["L", "N", "P", "Z", "Cc", "Cs", "So"]), max_size=40)
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | text
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=12,
    )


def raw_bodies() -> Any:
    """Bytes a client might send to a JSON route: JSON with our field names holding anything, or noise."""
    import json

    from hypothesis import strategies as st

    fields = st.sampled_from(["text", "name", "intensity", "sdp", "type"])
    objects = st.dictionaries(fields, json_values(), max_size=4)
    as_json = (objects | json_values()).map(lambda v: json.dumps(v, allow_nan=True).encode())
    return as_json | st.binary(max_size=200)


def fuzz_raw(base: str, session_id: str, session_token: str) -> Findings:
    """POST hostile and generated bodies to every JSON route (blocking; run in a thread)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    findings = Findings()
    http = requests.Session()
    auth = {"Authorization": f"Bearer {session_token}"}
    routes = ["/api/offer", *(f"/api/sessions/{session_id}/{op}" for op in ("say", "emotion", "interrupt"))]

    def post(path: str, body: bytes) -> None:
        response = http.post(
            base + path, data=body, headers={**auth, "Content-Type": "application/json"}, timeout=15
        )
        findings.calls += 1
        findings.statuses[response.status_code] = findings.statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            findings.bad.append(f"POST {path} {body[:60]!r}: {response.status_code} {response.text[:200]}")
        elif response.status_code >= 400 and "error" not in response.json():
            findings.bad.append(f"POST {path} {body[:60]!r}: {response.status_code} without a JSON error")
        if path.endswith("/say") and response.status_code == 202:
            http.post(f"{base}/api/sessions/{session_id}/interrupt", headers=auth, timeout=15)

    for path in routes:
        for body in HOSTILE_BODIES:
            post(path, body)

    @settings(
        max_examples=4 * EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(path=st.sampled_from(routes), body=raw_bodies())
    def run(path: str, body: bytes) -> None:
        post(path, body)

    run()
    return findings


async def test_hostile_json_bodies_and_websocket_junk_get_4xx_and_the_session_keeps_streaming(
    server: ServerProcess,
) -> None:
    import aiohttp

    async with Client(server.base) as client:
        await client.wait_video(5)
        assert client.session_id and client.token
        findings = await asyncio.to_thread(fuzz_raw, server.base, client.session_id, client.token)
        assert not findings.bad, "\n".join(findings.bad[:20])
        assert findings.statuses.get(400, 0) > len(HOSTILE_BODIES)
        # the same junk as websocket commands: each answered with an error event, the socket stays open
        url = f"{server.base}/api/sessions/{client.session_id}/events"
        async with client.http.ws_connect(url, params={"token": client.token}) as ws:
            junk = [
                "[" * 2000 + "]" * 2000,
                '{"type": "say", "text": "\\ud800"}',
                '{"type": "emotion", "name": 1}',
            ]
            for message in junk:
                await ws.send_str(message)
            errors: list[str] = []
            while len(errors) < len(junk):
                msg = await asyncio.wait_for(ws.receive(), timeout=10)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                event = msg.json()
                if event.get("type") == "error":
                    errors.append(event["message"])
            assert all(e.startswith("bad command") for e in errors), errors
            assert not ws.closed
        assert server.health()["status"] == "ok"
        before = len(client.rx.video_t)
        await asyncio.sleep(2.0)
        assert len(client.rx.video_t) >= before + 20, "the live session stopped receiving frames"
        assert not server_errors(server)
