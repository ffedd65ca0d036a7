"""``splatcast bot``: the ready Pipecat voice bot (:mod:`realtime.pipecat.bot`) until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys

from realtime.cli.serve import is_loopback, run_server
from realtime.pipecat.bot import BotError, bot_settings, serve_bot
from realtime.settings import Settings


def bot_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        settings = bot_settings(settings)
    except BotError as exc:
        print(f"splatcast bot: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(settings.host) and not settings.insecure:
        print(
            f"splatcast bot: refusing to listen on {settings.host}: the bot has no authentication; "
            "put it behind something that has, and pass --insecure",
            file=sys.stderr,
        )
        return 2
    return run_server("bot", settings, serve_bot)
