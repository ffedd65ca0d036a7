"""Settings precedence (flags > env > TOML > defaults), coercion and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from realtime.settings import Settings, SettingsError, load_settings


def test_defaults() -> None:
    s = load_settings(flags={}, env={})
    assert s == Settings()
    assert s.port == 8080 and s.fps == 25 and s.brain == "echo" and s.avatar is None


def test_precedence_flags_over_env_over_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "splatcast.toml"
    cfg.write_text('[splatcast]\nport = 9000\nfps = 30\nsize = 256\nhost = "0.0.0.0"\n')
    env = {"SPLATCAST_PORT": "9100", "SPLATCAST_FPS": "25", "UNRELATED": "x"}
    s = load_settings(flags={"port": 9200, "size": None}, env=env, config=cfg)
    assert s.port == 9200  # flag wins
    assert s.fps == 25  # env beats TOML
    assert s.size == 256  # TOML beats default; a None flag is "not given"
    assert s.host == "0.0.0.0"


def test_config_from_env_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('avatar = "~/my.safetensors"\nice_servers = ["stun:a", "turn:b"]\n')
    s = load_settings(flags={}, env={"SPLATCAST_CONFIG": str(cfg)})
    assert s.avatar == Path("~/my.safetensors").expanduser()
    assert s.ice_servers == ("stun:a", "turn:b")


def test_env_list_and_optional() -> None:
    s = load_settings(
        flags={}, env={"SPLATCAST_ICE_SERVERS": "stun:x, turn:y", "SPLATCAST_NUMBA_THREADS": "none"}
    )
    assert s.ice_servers == ("stun:x", "turn:y")
    assert s.numba_threads is None
    s = load_settings(
        flags={"agent_port": "8081"}, env={"SPLATCAST_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"}
    )
    assert s.agent_port == 8081 and s.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"port": 0}, "port"),
        ({"fps": 24}, "fps"),
        ({"size": 10}, "size"),
        ({"render_backend": "vulkan"}, "render_backend"),
        ({"brain": "openai"}, "llm-url"),
        ({"port": "eighty"}, "port"),
        ({"agent_port": 70000}, "agent_port"),
        ({"agent_port": 8080}, "agent_port"),  # the HTTP port
        ({"trusted_proxies": "10.0.0.0/8,proxy.example"}, "trusted_proxies: 'proxy.example'"),
        ({"trusted_proxies": "10.0.0.0/33"}, "trusted_proxies"),
    ],
)
def test_invalid_values_are_rejected(flags: dict[str, object], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        load_settings(flags=flags, env={})


def test_unknown_toml_key_and_bad_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="unknown settings"):
        load_settings(flags={}, env={}, config=bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(flags={}, env={}, config=broken)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(flags={}, env={}, config=tmp_path / "nope.toml")


def test_secret_is_masked() -> None:
    s = load_settings(
        flags={"brain": "openai", "llm_url": "http://127.0.0.1:1/v1", "llm_key": "sk-secret"}, env={}
    )
    assert s.llm_key == "sk-secret"
    assert "sk-secret" not in repr(s)
    assert s.public_dict()["llm_key"] == "***"
