"""One typed settings object, built once in the CLI and passed down.

Precedence (highest first): command-line flags, environment variables
``SPLATCAST_<FIELD>`` (upper case), an optional TOML file (``--config`` or
``SPLATCAST_CONFIG``), then the defaults below. Nothing here is global:
``load_settings`` returns a new frozen object every call.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from engines.a2v.runtime import RUNTIME_CHOICES, A2VRuntimeChoice
from engines.splat.rasterize import BACKENDS, RenderBackend

ENV_PREFIX = "SPLATCAST_"

Brain = Literal["echo", "openai"]
BRAINS: tuple[Brain, ...] = get_args(Brain)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsError(ValueError):
    """A setting has a value of the wrong type or an unknown name."""


@dataclass(frozen=True)
class Settings:
    # server
    host: str = "127.0.0.1"
    port: int = 8080
    # avatar and rendering
    avatar: Path | None = None  # the server's default avatar: a file or a library id (None: the bundled one)
    avatars: Path | None = None  # the avatar library directory (None: ~/.local/share/splatcast/avatars)
    avatar_cache_mb: int = 256  # memory bound of loaded avatars no session uses (LRU beyond it)
    voice: str | None = None  # the default Piper voice: an id or a path to NAME.onnx (None: the bundled one)
    voices: Path | None = None  # a directory of Piper voices (None: ~/.local/share/splatcast/voices)
    fps: int = 25
    size: int = 512
    render_backend: RenderBackend = "cpu"  # engines.splat.rasterize.BACKENDS
    a2v_runtime: A2VRuntimeChoice = "onnx-cpu"  # engines.a2v.runtime.RUNTIME_CHOICES
    # conversation
    brain: Brain = "echo"
    llm_url: str | None = None
    llm_model: str | None = None
    llm_key: str | None = field(default=None, repr=False)  # a secret: never in logs
    system_prompt: str = "You are a friendly, concise assistant. Answer in one or two short sentences."
    llm_timeout_s: float = 15.0  # longest wait for the first token (and between tokens) of an LLM answer
    llm_fallback: str = "Sorry, I could not think of an answer just now."  # said when a turn fails; "": none
    # expression: emotion from the reply's text, emphasis from the voice, listening reactions; 0 = off
    expressiveness: float = 0.6
    # access and limits (see README "Deploying")
    token: str | None = field(default=None, repr=False)  # bearer token for /api and the websocket; a secret
    insecure: bool = False  # allow a non-loopback bind without a token
    cors_origins: tuple[str, ...] = ()  # other origins allowed to call the API (the page's own always is)
    offer_rate_per_minute: int = 20  # new sessions per client IP per minute
    idle_timeout_s: int = 600  # a session nobody drives or talks to ends after this
    session_max_s: int = 3600  # and every session ends after this
    connect_timeout_s: int = 20  # a session whose media (ICE/DTLS) is not connected after this ends
    drain_s: int = 30  # on SIGTERM: how long current sessions may finish before they are closed
    max_sessions: int | None = None  # hard cap on concurrent sessions (None: admission control alone)
    capacity: int | None = None  # override the measured capacity (sessions at 25 FPS); None: measured
    ice_servers: tuple[
        str, ...
    ] = ()  # e.g. ("stun:stun.example.org:3478", "turn:user:pass@turn.example.org")
    # behind a balancer (see README "Beyond one machine")
    agent_port: int | None = None  # answer HAProxy's agent check here (free capacity / drain); None: off
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For / Forwarded name the client
    # process
    log_level: str = "INFO"
    numba_threads: int | None = None  # threads one frame's render uses (None: all cores / render_workers)
    render_workers: int | None = None  # frames rendered at once (None: one per core on cpu, else 1)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def public_dict(self) -> dict[str, Any]:
        """Settings as plain values with secrets masked (safe to log or show)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                value = "***"
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


SECRET_FIELDS = frozenset({"llm_key", "token"})
FIELD_NAMES = frozenset(f.name for f in fields(Settings))


def _coerce(name: str, raw: Any) -> Any:
    """Turn a TOML/env/flag value into the field's declared type."""
    hint = typing.get_type_hints(Settings)[name]
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if raw is None or (optional and isinstance(raw, str) and raw.strip().lower() in {"", "none", "null"}):
        if optional:
            return None
        raise SettingsError(f"setting '{name}' cannot be empty")
    try:
        if base is Path:
            return Path(raw).expanduser()
        if base is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError("not a boolean (use true/false)")
        if base is int:
            if isinstance(raw, bool):
                raise TypeError("bool is not an int")
            return int(raw)
        if base is float:
            if isinstance(raw, bool):
                raise TypeError("bool is not a number")
            return float(raw)
        if base is str or typing.get_origin(base) is Literal:  # a Literal's names are checked in _validate
            return str(raw)
        if typing.get_origin(base) is tuple:
            if isinstance(raw, str):
                return tuple(s.strip() for s in raw.split(",") if s.strip())
            return tuple(str(s) for s in raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting '{name}': cannot use {raw!r} as {base}: {exc}") from exc
    raise SettingsError(f"setting '{name}' has an unsupported type {hint}")


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise SettingsError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
    # accept both a flat file and a [splatcast] table
    table = data.get("splatcast", data)
    unknown = sorted(set(table) - FIELD_NAMES)
    if unknown:
        raise SettingsError(f"config file {path}: unknown settings {unknown}; known: {sorted(FIELD_NAMES)}")
    return dict(table)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in FIELD_NAMES:
            out[name] = value
    return out


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config: Path | None = None,
) -> Settings:
    """Build the settings: flags > env ``SPLATCAST_*`` > TOML file > defaults.

    ``flags`` holds only the options the user gave (``None`` values are ignored).
    """
    env = os.environ if env is None else env
    if config is None and env.get(ENV_PREFIX + "CONFIG"):
        config = Path(env[ENV_PREFIX + "CONFIG"])
    merged: dict[str, Any] = {}
    if config is not None:
        merged.update(_from_toml(config))
    merged.update(_from_env(env))
    merged.update({k: v for k, v in (flags or {}).items() if v is not None and k in FIELD_NAMES})
    values = {name: _coerce(name, raw) for name, raw in merged.items()}
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if not 1 <= s.port <= 65535:
        raise SettingsError(f"port must be 1..65535, got {s.port}")
    if s.fps not in (25, 30):
        raise SettingsError(f"fps must be 25 or 30, got {s.fps}")
    if not 64 <= s.size <= 2048:
        raise SettingsError(f"size must be 64..2048 pixels, got {s.size}")
    for name, allowed in (("render_backend", BACKENDS), ("a2v_runtime", RUNTIME_CHOICES), ("brain", BRAINS)):
        if getattr(s, name) not in allowed:
            raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {getattr(s, name)!r}")
    if s.brain == "openai" and not s.llm_url:
        raise SettingsError("brain 'openai' needs --llm-url (or SPLATCAST_LLM_URL)")
    if s.log_level.upper() not in LOG_LEVELS:
        raise SettingsError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {s.log_level!r}")
    for name in (
        "max_sessions",
        "capacity",
        "offer_rate_per_minute",
        "idle_timeout_s",
        "session_max_s",
        "connect_timeout_s",
        "render_workers",
    ):
        value = getattr(s, name)
        if value is not None and value < 1:
            raise SettingsError(f"{name} must be >= 1, got {value}")
    if not 0.1 <= s.llm_timeout_s <= 600:  # also false for NaN
        raise SettingsError(f"llm_timeout_s must be 0.1..600 seconds, got {s.llm_timeout_s}")
    if len(s.llm_fallback) > 500:
        raise SettingsError(f"llm_fallback must be at most 500 characters, got {len(s.llm_fallback)}")
    if s.drain_s < 0:
        raise SettingsError(f"drain_s must be >= 0, got {s.drain_s}")
    if s.token is not None and len(s.token) < 16:
        raise SettingsError(
            "token must be at least 16 characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
        )
    if not 16 <= s.avatar_cache_mb <= 65536:
        raise SettingsError(f"avatar_cache_mb must be 16..65536, got {s.avatar_cache_mb}")
    if s.numba_threads is not None and s.numba_threads < 1:
        raise SettingsError(f"numba_threads must be >= 1, got {s.numba_threads}")
    if s.agent_port is not None and not (1 <= s.agent_port <= 65535 and s.agent_port != s.port):
        raise SettingsError(f"agent_port must be 1..65535 and not the HTTP port, got {s.agent_port}")
    try:
        parse_networks(s.trusted_proxies)
    except ValueError as exc:
        raise SettingsError(f"trusted_proxies: {exc}") from None
    if not 0.0 <= s.expressiveness <= 1.0:  # also false for NaN
        raise SettingsError(
            f"expressiveness must be within 0..1 (0: off, 0.6: natural), got {s.expressiveness}"
        )


def parse_networks(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``10.0.0.0/8``, ``127.0.0.1`` (one host), ``fd00::/8`` → networks; ValueError says which is wrong."""
    out = []
    for value in values:
        text = value.strip()
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not an IP address or CIDR network ({exc})") from None
    return tuple(out)
