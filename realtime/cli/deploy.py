"""``splatcast deploy haproxy``: write the HAProxy configuration for N replicas (:mod:`realtime.web.haproxy_config`)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from realtime.settings import Settings
from realtime.web.haproxy_config import DeployConfigError, HAProxyConfig, parse_replica

WRITTEN_BY = "# Written by: "  # the header line haproxy.cfg.in starts with the command that wrote it


def config_from_args(settings: Settings, args: argparse.Namespace) -> HAProxyConfig:
    """The configuration the command line asks for (raises DeployConfigError with what to fix)."""
    return HAProxyConfig(
        replicas=tuple(parse_replica(spec) for spec in args.replica or ()),
        discover=parse_replica(args.discover) if args.discover else None,
        slots=args.slots,
        bind=tuple(args.bind or HAProxyConfig.bind),
        tls_cert=args.tls_cert,
        tls_bind=tuple(args.tls_bind or HAProxyConfig.tls_bind),
        stats_socket=args.stats_socket or None,
        session_max_s=args.session_max_s if args.session_max_s is not None else settings.session_max_s,
        check_inter_s=args.check_inter,
        agent_inter_s=args.agent_inter,
    )


def haproxy_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        text = config_from_args(settings, args).render()
    except DeployConfigError as exc:
        print(f"splatcast deploy haproxy: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
        return 0
    _write_atomically(args.output, text)
    print(f"wrote {args.output}; check it with `haproxy -c -f {args.output}`", file=sys.stderr)
    return 0


def _write_atomically(path: Path, text: str) -> None:
    """A reader (HAProxy reloading) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def rerender(text: str, settings: Settings | None = None) -> str:
    """Run again the ``splatcast deploy haproxy`` command a generated configuration names in its header
    (``# Written by: ...``): the text it writes today, for keeping shipped examples current."""
    import shlex

    from realtime.cli.main import build_parser

    header = next((line for line in text.splitlines() if line.startswith(WRITTEN_BY)), None)
    if header is None:
        raise DeployConfigError(f"no '{WRITTEN_BY}' line: not written by splatcast deploy haproxy")
    argv = shlex.split(header[len(WRITTEN_BY) :])
    if argv[:3] != ["splatcast", "deploy", "haproxy"]:
        raise DeployConfigError(f"not a splatcast deploy haproxy command: {header}")
    args = build_parser().parse_args(argv[1:])
    return config_from_args(settings or Settings(), args).render()
