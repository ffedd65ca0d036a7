"""The ``splatcast`` command line: one parser, typed settings built once, lazy dispatch.

Each subcommand names the function that runs it as ``"module:function"``; the
module is imported only when that subcommand runs, so ``splatcast doctor`` does
not pay for numba, torch or pipecat. A handler has the signature
``handler(settings: Settings, args: argparse.Namespace) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from engines.a2v.runtime import RUNTIME_CHOICES
from engines.splat.rasterize import BACKENDS
from realtime.settings import BRAINS, Settings, SettingsError, load_settings
from realtime.web.haproxy_config import DEFAULT_STATS_SOCKET

logger = logging.getLogger("splatcast")

Handler = Callable[[Settings, argparse.Namespace], int]


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that feed the Settings object (only the ones given override env/TOML)."""
    g = parser.add_argument_group("settings (also SPLATCAST_<NAME> env vars or --config TOML)")
    g.add_argument(
        "--avatar", type=Path, default=None, help="avatar .safetensors or library id (default: bundled)"
    )
    g.add_argument("--fps", type=int, default=None, help="video frame rate: 25 (default) or 30")
    g.add_argument("--size", type=int, default=None, help="video size in pixels (square), default 512")
    g.add_argument("--render-backend", dest="render_backend", default=None, choices=BACKENDS)
    g.add_argument("--a2v-runtime", dest="a2v_runtime", default=None, choices=RUNTIME_CHOICES)
    g.add_argument(
        "--numba-threads",
        dest="numba_threads",
        type=int,
        default=None,
        help="threads one frame's CPU render uses (default: the cores shared out among the render workers)",
    )
    g.add_argument(
        "--render-workers",
        dest="render_workers",
        type=int,
        default=None,
        help="frames rendered at once (default: one per core with the cpu backend, else 1)",
    )
    g.add_argument(
        "--expressiveness",
        type=float,
        default=None,
        help="0..1: emotion from what is said, emphasis from the voice, listening reactions "
        "(0: off, the face moves as before; default 0.6)",
    )


def _llm_fault_flags(g: argparse._ArgumentGroup) -> None:
    """What a failed LLM turn does (serve and bot)."""
    g.add_argument(
        "--llm-timeout",
        dest="llm_timeout_s",
        type=float,
        default=None,
        help="seconds to wait for the LLM's first token (and between tokens) before the turn fails (default 15)",
    )
    g.add_argument(
        "--llm-fallback",
        dest="llm_fallback",
        default=None,
        help='what the avatar says when an LLM turn fails ("" for nothing)',
    )


def _library_flags(parser: argparse.ArgumentParser) -> None:
    """Where the avatar library and the voices live."""
    g = parser.add_argument_group("avatar library and voices")
    g.add_argument(
        "--avatars",
        type=Path,
        default=None,
        help="avatar library directory (default ~/.local/share/splatcast/avatars)",
    )
    g.add_argument(
        "--voice",
        default=None,
        help="default Piper voice: an id from /api/voices or NAME.onnx (default: bundled)",
    )
    g.add_argument(
        "--voices",
        type=Path,
        default=None,
        help="directory of Piper voices (default ~/.local/share/splatcast/voices)",
    )


def _server_flags(parser: argparse.ArgumentParser) -> None:
    _library_flags(parser)
    parser.add_argument(
        "--avatar-cache-mb",
        dest="avatar_cache_mb",
        type=int,
        default=None,
        help="memory for loaded avatars no session uses (default 256; in-use ones never leave)",
    )
    g = parser.add_argument_group("server")
    g.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=None, help="port (default 8080)")
    g.add_argument("--brain", default=None, choices=BRAINS, help="echo (default) or openai")
    g.add_argument("--llm-url", dest="llm_url", default=None, help="OpenAI-compatible base URL")
    g.add_argument("--llm-model", dest="llm_model", default=None)
    g.add_argument("--llm-key", dest="llm_key", default=None, help="API key (prefer SPLATCAST_LLM_KEY)")
    g.add_argument("--system-prompt", dest="system_prompt", default=None)
    _llm_fault_flags(g)
    g.add_argument("--ice-servers", dest="ice_servers", default=None, help="comma-separated STUN/TURN URLs")
    g.add_argument("--max-sessions", dest="max_sessions", type=int, default=None, help="hard session cap")
    g.add_argument("--token", default=None, help="bearer token for the API (prefer SPLATCAST_TOKEN)")
    g.add_argument(
        "--insecure",
        action="store_const",
        const=True,
        default=None,
        help="allow a public bind without a token",
    )
    g.add_argument(
        "--cors-origins", dest="cors_origins", default=None, help="comma-separated allowed origins"
    )
    g.add_argument(
        "--capacity", type=int, default=None, help="sessions this machine holds (default: measured per frame)"
    )
    g = parser.add_argument_group("behind a balancer (README: Beyond one machine)")
    g.add_argument(
        "--agent-port",
        dest="agent_port",
        type=int,
        default=None,
        help="answer HAProxy's agent check on this TCP port: free capacity as a weight, or drain",
    )
    g.add_argument(
        "--trusted-proxies",
        dest="trusted_proxies",
        default=None,
        help="comma-separated CIDRs of proxies whose X-Forwarded-For/Forwarded name the client",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splatcast",
        description="Real-time conversational Gaussian-splat avatar server.",
    )
    parser.add_argument("--config", type=Path, default=None, help="TOML settings file (or SPLATCAST_CONFIG)")
    parser.add_argument(
        "--log-level", dest="log_level", default=None, help="DEBUG, INFO (default), WARNING, ERROR"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        parent: argparse._SubParsersAction,
        name: str,
        target: str,
        help_text: str,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(target=target)
        return p

    # serve
    p = command(
        sub, "serve", "realtime.cli.serve:serve_command", "run the avatar server (browser client at /)"
    )
    _server_flags(p)
    _settings_flags(p)

    # bot
    p = command(
        sub,
        "bot",
        "realtime.cli.bot:bot_command",
        "a ready Pipecat voice bot with the avatar's face (browser at /)",
    )
    g = p.add_argument_group("bot")
    g.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=None, help="port (default 8080)")
    g.add_argument(
        "--llm-url", dest="llm_url", default=None, help="OpenAI-compatible base URL (default: echo)"
    )
    g.add_argument("--llm-model", dest="llm_model", default=None)
    g.add_argument("--llm-key", dest="llm_key", default=None, help="API key (prefer SPLATCAST_LLM_KEY)")
    g.add_argument("--system-prompt", dest="system_prompt", default=None)
    _llm_fault_flags(g)
    g.add_argument("--ice-servers", dest="ice_servers", default=None, help="comma-separated STUN/TURN URLs")
    g.add_argument(
        "--insecure", action="store_const", const=True, default=None, help="allow a non-loopback bind"
    )
    _settings_flags(p)

    # say
    p = command(sub, "say", "realtime.cli.say:say_command", "render TEXT (or --audio) to an MP4 offline")
    p.add_argument("text", nargs="?", default=None, help="what the avatar says")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .mp4")
    p.add_argument("--audio", type=Path, default=None, help="speak this audio file instead of TTS")
    p.add_argument(
        "--emotion",
        default=None,
        help="hold one emotion for the whole clip: neutral, happy, sad, surprised, thinking "
        "(default: each sentence's own, from its words)",
    )
    _settings_flags(p)

    # avatar
    avatar = sub.add_parser("avatar", help="create and inspect avatars").add_subparsers(
        dest="avatar_command", metavar="ACTION", required=True
    )
    p = command(
        avatar,
        "create",
        "realtime.cli.avatar:create_command",
        "build an avatar from a frontal photo, or a personal replica from a short video",
    )
    p.add_argument("--photo", type=Path, help="portrait image (JPEG/PNG)")
    p.add_argument(
        "--video",
        type=Path,
        help="a 3 s – 5 min clip of one person talking to the camera (MP4, MOV, WebM, MKV): a personal replica",
    )
    p.add_argument(
        "--astronaut", action="store_true", help="use skimage.data.astronaut() (the default avatar)"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output .safetensors")
    p.add_argument(
        "--tracking",
        type=Path,
        default=None,
        help="--video: also save the clip's tracking (.npz) for avatar eval",
    )
    p = command(
        avatar,
        "eval",
        "realtime.cli.replica:eval_command",
        "self-reenactment on a clip's held-out frames: the avatar vs a one-shot from one frame",
    )
    p.add_argument("--video", type=Path, required=True, help="the clip the replica was built from")
    p.add_argument("avatar_path", type=Path, help="the replica (.safetensors)")
    p.add_argument(
        "--baseline-photo-frame",
        dest="baseline_photo_frame",
        type=int,
        default=None,
        help="frame number of the one-shot baseline's photo (default: the replica's rest frame)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the scores as JSON here")
    p.add_argument(
        "--report", type=Path, default=None, help="write report.md, sheet.png, side_by_side.mp4 here"
    )
    p.add_argument("--tracking", type=Path, default=None, help="reuse a tracking saved by avatar create")
    p.add_argument(
        "--max-frames",
        dest="max_frames",
        type=int,
        default=None,
        help="score at most N held-out frames (spread)",
    )
    p = command(avatar, "preview", "realtime.cli.avatar:preview_command", "render a labelled sheet of shapes")
    p.add_argument("avatar_path", type=Path, nargs="?", default=None, help="avatar (default: bundled)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .png")
    _settings_flags(p)
    p = command(avatar, "info", "realtime.cli.avatar:info_command", "print an avatar's metadata")
    p.add_argument("avatar_path", type=Path, nargs="?", default=None)
    p = command(avatar, "list", "realtime.cli.library:list_command", "list the avatar library")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    _library_flags(p)
    p = command(
        avatar,
        "add",
        "realtime.cli.library:add_command",
        "add an avatar file, or build one from a photo/video",
    )
    p.add_argument("file", type=Path, help="an avatar .safetensors, a photo (JPEG/PNG/WebP) or a video")
    p.add_argument("--name", required=True, help="the name shown in the picker")
    _library_flags(p)
    p = command(avatar, "rm", "realtime.cli.library:rm_command", "delete an avatar (refused while in use)")
    p.add_argument("avatar_id", help="the avatar's id (splatcast avatar list)")
    _library_flags(p)

    # a2v
    a2v = sub.add_parser("a2v", help="audio-to-viseme network: data, training, evaluation").add_subparsers(
        dest="a2v_command", metavar="ACTION", required=True
    )
    p = command(a2v, "data", "realtime.cli.a2v:data_command", "synthesise the training corpus")
    p.add_argument("--out", type=Path, default=Path("build/a2v-corpus"))
    p.add_argument("--sentences", type=int, default=800)
    p.add_argument("--seed", type=int, default=0)
    p = command(a2v, "train", "realtime.cli.a2v:train_command", "train a2v on CPU and write ONNX + card")
    p.add_argument("--data", type=Path, default=Path("build/a2v-corpus"))
    p.add_argument("--out", type=Path, default=Path("build/a2v"))
    p.add_argument("--minutes", type=float, default=25.0, help="training time budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--install", action="store_true", help="copy the ONNX + card into engines/data (shipped)")
    p = command(a2v, "eval", "realtime.cli.a2v:eval_command", "evaluate on the held-out split")
    p.add_argument("--data", type=Path, default=Path("build/a2v-corpus"))
    p.add_argument("--weights", type=Path, default=None, help="ONNX weights (default: bundled)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _settings_flags(p)

    # export
    export = sub.add_parser("export", help="offline compilation: ONNX, TensorRT, avatar LOD").add_subparsers(
        dest="export_command", metavar="ACTION", required=True
    )
    p = command(export, "onnx", "realtime.cli.a2v:export_onnx_command", "export trained a2v weights to ONNX")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("-o", "--output", type=Path, required=True)
    p = command(export, "tensorrt", "realtime.cli.a2v:export_tensorrt_command", "build a TensorRT engine")
    p.add_argument("--onnx", type=Path, default=None, help="ONNX model (default: bundled)")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--max-batch", type=int, default=64)
    p = command(export, "distill", "realtime.cli.avatar:distill_command", "add LOD levels to an avatar")
    p.add_argument("avatar_path", type=Path)
    p.add_argument("-o", "--output", type=Path, default=None, help="output (default: overwrite input)")
    p.add_argument("--levels", default="1.0,0.5,0.25", help="comma-separated Gaussian budgets")

    # bench
    bench = sub.add_parser("bench", help="benchmarks (JSON out)").add_subparsers(
        dest="bench_command", metavar="ACTION", required=True
    )
    p = command(bench, "render", "benchmarks.render:bench_render_command", "splat render speed")
    p.add_argument("--backend", default="cpu", choices=BACKENDS)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--json", action="store_true")
    _settings_flags(p)
    p = command(
        bench, "replica", "benchmarks.replica:bench_replica_command", "replica build time, memory and eval"
    )
    p.add_argument("--clip", type=Path, required=True, help="a clip of one person talking")
    p.add_argument("--json", type=Path, required=True, help="write the figures here")
    p.add_argument("--report", type=Path, default=None, help="also write the eval report here")
    p.add_argument("--avatar-out", dest="avatar_out", type=Path, default=None, help="save the replica here")
    p.add_argument("--no-eval", dest="no_eval", action="store_true", help="build only")
    p = command(bench, "a2v", "benchmarks.a2v:bench_a2v_command", "a2v inference latency")
    p.add_argument("--json", action="store_true")
    _settings_flags(p)
    p = command(
        bench,
        "conversation",
        "benchmarks.conversation:bench_conversation_command",
        "conversation loop latencies",
    )
    p.add_argument("--repeats", type=int, default=5, help="user turns to time")
    p.add_argument(
        "--call",
        action="store_true",
        help="time the turns inside a live call: a local server streaming the avatar to a WebRTC client "
        "whose microphone speaks (default: the conversation loop alone, no rendering)",
    )
    p.add_argument("--json", action="store_true")
    _settings_flags(p)
    for name, help_text in (
        ("latency", "end-to-end latency and A/V sync with aiortc clients"),
        ("load", "find how many sessions hold 25 FPS"),
        ("lipsync", "lip-sync correlation and lag on held-out sentences"),
        (
            "expression",
            "emotion from text (mouth corners) and emphasis from the voice (brow/head vs accents)",
        ),
        ("soak", "sessions join and leave for M minutes"),
    ):
        p = command(bench, name, f"benchmarks.{name}:bench_{name}_command", help_text)
        p.add_argument("--url", default=None, help="server to test (default: start one locally)")
        p.add_argument(
            "--sessions",
            type=int,
            default=None,
            help="latency: concurrent clients (default 1); load: most sessions to try (default 16); lipsync, "
            "expression: sentences (default 5, 8); soak: most sessions at once (default 1)",
        )
        p.add_argument(
            "--duration", type=float, default=30.0, help="seconds measured (load: per step of sessions)"
        )
        p.add_argument("--minutes", type=float, default=30.0, help="soak: how long sessions join and leave")
        p.add_argument("--json", dest="json_out", type=Path, default=None)
        p.add_argument("--report", type=Path, default=None)
        p.add_argument("--compare", type=Path, default=None)
        if name in ("latency", "load"):
            p.add_argument(
                "--replicas",
                type=int,
                default=1,
                help="start N local replicas behind a local HAProxy and measure through it (needs haproxy)",
            )
        if name == "load":
            p.add_argument(
                "--decode-video",
                dest="decode_video",
                action="store_true",
                help="the clients decode every VP8 frame (default: they check each complete frame's header "
                "and time its arrival, without libvpx's decode on the machine being measured)",
            )
        _settings_flags(p)  # the local server's avatar, size, fps, backend (ignored with --url but --avatar)

    p = command(
        bench,
        "build",
        "benchmarks.avatar_build:bench_build_command",
        "a live session's FPS while an avatar builds",
    )
    p.add_argument("--url", default=None, help="server to test (default: start one locally)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds measured before and after the build")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--photo", type=Path, default=None, help="the photo to build from (default: the astronaut)"
    )
    source.add_argument(
        "--video", type=Path, default=None, help="a clip to build a replica from instead of a photo"
    )
    p.add_argument("--json", dest="json_out", type=Path, default=None)
    _settings_flags(p)

    # deploy
    deploy = sub.add_parser("deploy", help="configurations for running many replicas").add_subparsers(
        dest="deploy_command", metavar="TARGET", required=True
    )
    p = command(
        deploy,
        "haproxy",
        "realtime.cli.deploy:haproxy_command",
        "write an HAProxy configuration for N replicas (capacity-aware, sessions stick to their replica)",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--replica",
        action="append",
        metavar="HOST:PORT[:AGENT]",
        help="a replica: its HTTP port and its --agent-port (repeat for each; [IPv6]:PORT:AGENT)",
    )
    where.add_argument(
        "--discover",
        metavar="NAME:PORT:AGENT",
        help="replicas from DNS (e.g. a Kubernetes headless Service), up to --slots of them",
    )
    p.add_argument("--slots", type=int, default=10, help="with --discover: most replicas (default 10)")
    p.add_argument(
        "--bind", action="append", metavar="ADDR:PORT", help="plain HTTP listen address (default :80)"
    )
    p.add_argument("--tls-cert", metavar="PEM", default=None, help="serve HTTPS with this certificate + key")
    p.add_argument(
        "--tls-bind", action="append", metavar="ADDR:PORT", help="HTTPS listen address (default :443)"
    )
    p.add_argument(
        "--stats-socket",
        default=DEFAULT_STATS_SOCKET,
        help="HAProxy's runtime API socket ('' for none; default Debian's)",
    )
    p.add_argument(
        "--session-max-s",
        type=int,
        default=None,
        help="the replicas' session_max_s (default: this machine's setting, 3600)",
    )
    p.add_argument("--check-inter", type=float, default=1.0, help="seconds between health checks (default 1)")
    p.add_argument("--agent-inter", type=float, default=1.0, help="seconds between agent checks (default 1)")
    p.add_argument("-o", "--output", type=Path, default=None, help="write here (default: stdout)")

    # doctor
    p = command(sub, "doctor", "realtime.cli.doctor:doctor_command", "check the machine and bundled assets")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def resolve(target: str) -> Handler:
    """Import the ``module:function`` a subcommand names (lazily: only the command that runs pays)."""
    module_name, _, func_name = target.partition(":")
    handler: Handler = getattr(importlib.import_module(module_name), func_name)
    return handler


def setup_logging(level: str, secrets: Sequence[str | None] = ()) -> None:
    from realtime.web.security import SecretFilter

    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(SecretFilter(secrets))  # tokens and keys never reach a log line
    # chatty libraries stay quiet unless we debug
    if level.upper() != "DEBUG":
        for noisy in ("aioice", "aiortc", "numba", "faster_whisper", "matplotlib", "PIL"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    # Pipecat logs through loguru: route it here, so the level and the secret filter apply to it too
    from realtime.cli.log_bridge import route_loguru_to_logging

    route_loguru_to_logging()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(flags=vars(args), config=args.config)
    except SettingsError as exc:
        parser.error(str(exc))
    setup_logging(settings.log_level, secrets=(settings.token, settings.llm_key))
    if settings.numba_threads is not None:
        import os

        os.environ["NUMBA_NUM_THREADS"] = str(settings.numba_threads)
    handler = resolve(args.target)
    try:
        return int(handler(settings, args) or 0)
    except KeyboardInterrupt:
        return 130
