"""A live test server open to hostile input: synthetic avatar, small video, offers not rate-limited."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from benchmarks.server_process import ServerProcess
from engines.splat.synthetic import write_synthetic_avatar

SIZE = 160  # video side of the server below


@contextlib.contextmanager
def hostile_input_server(workdir: Path) -> Iterator[ServerProcess]:
    """Start it, yield it, and assert it stopped cleanly (exit 0) afterwards."""
    path = workdir / "synthetic.safetensors"
    write_synthetic_avatar(path)
    # a high offer rate lets hostile offers reach the SDP checks instead of the per-address rate limit
    env = {**os.environ, "SPLATCAST_OFFER_RATE_PER_MINUTE": "1000"}
    srv = ServerProcess("--avatar", str(path), "--size", str(SIZE), "--capacity", "4", env=env)
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0, "".join(srv.log[-30:])
