"""benchmarks.server_process.free_port: a port handed out once is not handed out again in this process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks import server_process


def test_a_port_the_kernel_offers_again_is_not_handed_out_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two servers started one after the other must not get the same port: the first may not have bound it
    yet when the kernel offers the just-released port again (a test cluster's replicas once collided)."""
    offered: Iterator[int] = iter([40001, 40001, 40001, 40002])

    class FakeSocket:
        def __enter__(self) -> FakeSocket:
            return self

        def __exit__(self, *exc: Any) -> None:
            return None

        def bind(self, address: tuple[str, int]) -> None:
            self.port = next(offered)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(server_process, "_handed_out", set())
    monkeypatch.setattr(server_process.socket, "socket", FakeSocket)
    assert [server_process.free_port(), server_process.free_port()] == [40001, 40002]


def test_free_ports_are_bindable_and_distinct() -> None:
    import socket

    ports = [server_process.free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))
