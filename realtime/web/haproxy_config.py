"""The HAProxy configuration for N splatcast replicas (``splatcast deploy haproxy``).

One template, ``haproxy.cfg.in`` beside this module, commented for the reader
of the file it becomes; this module fills in the replicas, the listen
address(es) and the timings. ``deploy/haproxy/haproxy.cfg`` and the
Kubernetes ConfigMap in ``deploy/k8s/`` are this module's output (a test
keeps them so).

Replicas are named on the command line as ``HOST:PORT[:AGENT]`` (AGENT: the
port of ``splatcast serve --agent-port``), or discovered from DNS
(``--discover NAME:PORT:AGENT --slots N``: a headless Kubernetes Service).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from string import Template

TEMPLATE = "haproxy.cfg.in"
# the contract with the replicas: the offer's response names the new session in this header, and
# ?session=ID on any route reaches the replica that owns session ID
SESSION_HEADER = "X-Splatcast-Session"
SESSION_PARAM = "session"
JOB_HEADER = (
    "X-Splatcast-Job"  # an avatar upload's response names its build job (built where it was uploaded)
)
STICK_MARGIN_S = 600  # stick-table entries outlive the longest session by this much
DEFAULT_STATS_SOCKET = "/run/haproxy/admin.sock"  # where Debian's haproxy package keeps it
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


class DeployConfigError(ValueError):
    """A replica spec or option cannot be turned into a working configuration."""


@dataclass(frozen=True)
class Replica:
    host: str
    port: int
    agent_port: int | None  # None: no agent check (the replica's free capacity is not reported)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _port(text: str, what: str, spec: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise DeployConfigError(f"{spec!r}: {what} must be a port number 1..65535, got {text!r}")
    return int(text)


def _host(text: str, spec: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _HOST.fullmatch(text) or len(text) > 253:
        raise DeployConfigError(f"{spec!r}: {text!r} is neither an IP address nor a host name")
    return text


def parse_replica(spec: str) -> Replica:
    """``HOST:PORT[:AGENT]``; an IPv6 host goes in brackets: ``[fd00::5]:8080:8081``."""
    text = spec.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise DeployConfigError(f"{spec!r}: write an IPv6 replica as [ADDR]:PORT[:AGENT]")
        parts = [host, *rest[1:].split(":")]
    else:
        parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise DeployConfigError(f"{spec!r}: a replica is HOST:PORT or HOST:PORT:AGENT_PORT")
    port = _port(parts[1], "PORT", spec)
    agent = _port(parts[2], "AGENT_PORT", spec) if len(parts) == 3 else None
    if agent == port:
        raise DeployConfigError(f"{spec!r}: the agent port must differ from the HTTP port")
    return Replica(_host(parts[0], spec), port, agent)


def _duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _agent_params(agent_port: int | None, agent_inter: str) -> str:
    if agent_port is None:
        return ""
    return f" agent-check agent-port {agent_port} agent-inter {agent_inter}"


@dataclass(frozen=True)
class HAProxyConfig:
    """What ``splatcast deploy haproxy`` was asked for: fixed ``replicas`` or ``discover`` (DNS name of
    a headless Service, up to ``slots`` servers); plain HTTP on ``bind``; with ``tls_cert`` (a PEM with
    certificate and key) HTTPS on ``tls_bind`` and plain HTTP redirected to it."""

    replicas: tuple[Replica, ...] = ()
    discover: Replica | None = None
    slots: int = 10
    bind: tuple[str, ...] = (":80",)
    tls_cert: str | None = None
    tls_bind: tuple[str, ...] = (":443",)
    stats_socket: str | None = DEFAULT_STATS_SOCKET  # None: no runtime API socket
    session_max_s: int = 3600  # the replicas' session_max_s: tables and websocket tunnels outlive it
    check_inter_s: float = 1.0
    agent_inter_s: float = 1.0

    def validate(self) -> None:
        if bool(self.replicas) == (self.discover is not None):
            raise DeployConfigError(
                "name the replicas (--replica HOST:PORT[:AGENT] ...) or --discover, not both"
            )
        if not self.bind:
            raise DeployConfigError("at least one --bind address is needed")
        if self.tls_cert and not self.tls_bind:
            raise DeployConfigError("--tls-cert needs at least one --tls-bind address")
        if self.discover is not None and not 1 <= self.slots <= 1000:
            raise DeployConfigError(f"--slots must be 1..1000, got {self.slots}")
        if not (0.1 <= self.check_inter_s <= 60 and 0.1 <= self.agent_inter_s <= 60):
            raise DeployConfigError("check and agent intervals must be 0.1..60 s")
        if self.session_max_s < 1:
            raise DeployConfigError(f"--session-max-s must be >= 1, got {self.session_max_s}")
        names = [r.address for r in self.replicas]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DeployConfigError(f"replica {duplicates[0]} is named twice")
        for value in (*self.bind, *self.tls_bind, self.tls_cert or "", self.stats_socket or ""):
            if any(c.isspace() or c in "#\"'\\" for c in value):
                raise DeployConfigError(f"{value!r}: no spaces, quotes, '#' or backslashes, please")

    def command(self) -> str:
        """The ``splatcast deploy haproxy`` command line that writes this configuration."""
        default = HAProxyConfig()
        args = ["deploy", "haproxy"]
        for r in self.replicas:
            args += ["--replica", _spec(r)]
        if self.discover is not None:
            args += ["--discover", _spec(self.discover), "--slots", str(self.slots)]
        if self.bind != default.bind:
            for b in self.bind:
                args += ["--bind", b]
        if self.tls_cert:
            args += ["--tls-cert", self.tls_cert]
            if self.tls_bind != default.tls_bind:
                for b in self.tls_bind:
                    args += ["--tls-bind", b]
        if self.stats_socket != default.stats_socket:
            args += ["--stats-socket", self.stats_socket or ""]
        for flag, value, base in (
            ("--session-max-s", self.session_max_s, default.session_max_s),
            ("--check-inter", self.check_inter_s, default.check_inter_s),
            ("--agent-inter", self.agent_inter_s, default.agent_inter_s),
        ):
            if value != base:
                args += [flag, f"{value:g}"]
        return "splatcast " + " ".join(shlex.quote(a) for a in args)

    def render(self) -> str:
        """The text of haproxy.cfg."""
        self.validate()
        global_lines = ""
        if self.stats_socket:
            global_lines = (
                f"    # the runtime API: `echo 'show servers state' | socat stdio unix:{self.stats_socket}`\n"
                f"    stats socket {self.stats_socket} mode 660 level admin\n"
            )
        bind_lines = "\n".join(f"    bind {b}" for b in self.bind)
        if self.tls_cert:
            bind_lines += "\n" + "\n".join(f"    bind {b} ssl crt {self.tls_cert}" for b in self.tls_bind)
            bind_lines += (
                "\n    # browsers give the microphone only to secure pages: send plain HTTP to HTTPS\n"
            )
            bind_lines += "    http-request redirect scheme https unless { ssl_fc }"
        else:
            bind_lines += (
                "\n    # browsers give the microphone only to secure pages: terminate TLS here with\n"
                "    # `splatcast deploy haproxy --tls-cert /etc/haproxy/site.pem ...` (certificate + key in one PEM)"
            )
        agent_inter = _duration(self.agent_inter_s)
        if self.discover is not None:
            resolvers = (
                "\n# the replicas' addresses come from DNS (a headless Service in Kubernetes), checked every 10 s\n"
                "resolvers dns\n"
                "    parse-resolv-conf\n"
                "    hold valid 10s\n"
            )
            where = f"{self.discover.address} resolvers dns init-addr none"
            servers = (
                f"    # up to {self.slots} replicas behind {self.discover.host}; unused slots stay in maintenance\n"
                f"    server-template replica 1-{self.slots} {where}"
                f"{_agent_params(self.discover.agent_port, agent_inter)}"
            )
            page_servers = f"    server-template replica 1-{self.slots} {where}"
        else:
            resolvers = ""
            lines = []
            for i, r in enumerate(self.replicas, start=1):
                if r.agent_port is None:
                    lines.append(
                        "    # no agent port: this replica's free capacity is not reported to HAProxy"
                    )
                lines.append(f"    server replica{i} {r.address}{_agent_params(r.agent_port, agent_inter)}")
            servers = "\n".join(lines)
            page_servers = "\n".join(
                f"    server replica{i} {r.address}" for i, r in enumerate(self.replicas, start=1)
            )
        template = Template(resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8"))
        return template.substitute(
            command=self.command(),
            global_lines=global_lines,
            tunnel_timeout=self.session_max_s,
            resolvers=resolvers,
            bind_lines=bind_lines,
            stick_expire=self.session_max_s + STICK_MARGIN_S,
            check_inter=_duration(self.check_inter_s),
            servers=servers,
            page_servers=page_servers,
            session_header=SESSION_HEADER,
            job_header=JOB_HEADER,
            session_param=SESSION_PARAM,
        )


def _spec(r: Replica) -> str:
    return r.address if r.agent_port is None else f"{r.address}:{r.agent_port}"
