"""The ``splatcast`` command line: the parser and main (:mod:`realtime.cli.main`) and one module per command."""

from realtime.cli.main import build_parser, main, resolve

__all__ = ["build_parser", "main", "resolve"]
