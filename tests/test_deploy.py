"""deploy/: the HAProxy configuration generator and the Kubernetes manifests.

What is checked here, offline: every manifest against the Kubernetes API
schemas kubernetes-validate ships (strict: unknown fields are errors), the
promises the manifests make to each other and to the server (readiness on
/healthz, a preStop hook, a grace period longer than the drain, requests, a
non-root user, the ports HAProxy uses), and every HAProxy configuration we
ship or generate through ``haproxy -c``. What cannot run here: a cluster
(scheduling, DNS discovery through the headless Service, the preStop hook
under a kubelet, TURN). The balancer's behaviour with real replicas is
tests/test_balancer.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.haproxy_process import haproxy_binary
from realtime.cli.deploy import rerender
from realtime.cli.main import main
from realtime.web.haproxy_config import (
    SESSION_HEADER,
    SESSION_PARAM,
    DeployConfigError,
    HAProxyConfig,
    Replica,
    parse_replica,
)

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
SHIPPED_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
REGENERATE = "they are out of date with the template: run `python scripts/render_deploy.py`"
K8S_VERSIONS = ("1.29", "1.37")  # an older cluster still in support somewhere, and the newest schemas shipped


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}"
    return found[0]


def _haproxy_check(config: str, tmp_path: Path) -> None:
    binary = haproxy_binary()
    if binary is None:
        pytest.skip("haproxy is not installed (scripts/install-system-deps.sh installs it)")
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    proc = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- Kubernetes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    import kubernetes_validate

    docs = _documents()
    assert {d["kind"] for _, d in docs} == {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"}
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_the_validator_catches_a_misspelt_field() -> None:
    import kubernetes_validate

    deployment = _one("Deployment", "splatcast")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    broken = {**container, "readinesProbe": container["readinessProbe"]}
    doc = {**deployment, "spec": {**deployment["spec"]}}
    doc["spec"]["template"] = {"metadata": {}, "spec": {"containers": [broken]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_replica_deployment_keeps_its_promises() -> None:
    spec = _one("Deployment", "splatcast")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = _env(container)
    drain_s = int(env["SPLATCAST_DRAIN_S"])
    # the kubelet kills the pod when the grace period ends: the drain has to fit, with time to close
    assert spec["terminationGracePeriodSeconds"] >= drain_s + 5
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "httpGet" not in container["livenessProbe"]  # /healthz is 503 while draining: no restarts for it
    assert container["lifecycle"]["preStop"]["exec"]["command"]
    requests = container["resources"]["requests"]
    assert requests["cpu"] and requests["memory"]
    security = spec["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "SPLATCAST_TOKEN" in env  # a non-loopback bind needs a token (from the Secret)
    # one avatar library for all replicas: a shared (ReadWriteMany) claim mounted where SPLATCAST_AVATARS says
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == env["SPLATCAST_AVATARS"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    claim = _one("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"][1:])
    assert container["args"][0] == "serve" and args["host"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(args["port"]), "agent": int(args["agent-port"])}


def test_haproxy_finds_the_replicas_through_the_headless_service() -> None:
    service = _one("Service", "splatcast-replicas")
    deployment = _one("Deployment", "splatcast")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True  # draining pods keep their sessions' routes
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    config = _one("ConfigMap", "splatcast-haproxy")["data"]["haproxy.cfg"]
    template = next(line for line in config.splitlines() if line.strip().startswith("server-template"))
    assert f" splatcast-replicas.default.svc.cluster.local:{ports['http']} " in template
    assert f" agent-port {ports['agent']} " in template


def test_haproxy_deployment_mounts_its_config_and_is_reachable() -> None:
    deployment = _one("Deployment", "splatcast-haproxy")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    volume = next(v for v in spec["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == "splatcast-haproxy"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert container["args"][-1] == f"{mount['mountPath']}/haproxy.cfg"
    assert spec["securityContext"]["runAsNonRoot"] is True
    config = _one("ConfigMap", "splatcast-haproxy")["data"]["haproxy.cfg"]
    port = container["ports"][0]["containerPort"]
    assert f"    bind :{port}\n" in config
    service = _one("Service", "splatcast")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_configmap_haproxy_cfg_is_valid(tmp_path: Path) -> None:
    _haproxy_check(_one("ConfigMap", "splatcast-haproxy")["data"]["haproxy.cfg"], tmp_path)


# --- the shipped configurations ------------------------------------------------------------------------
def test_shipped_configs_are_what_their_commands_write() -> None:
    shipped = SHIPPED_CFG.read_text()
    assert rerender(shipped) == shipped, REGENERATE
    configmap = _one("ConfigMap", "splatcast-haproxy")["data"]["haproxy.cfg"]
    assert rerender(configmap) == configmap, REGENERATE


def test_shipped_config_is_valid(tmp_path: Path) -> None:
    # its stats socket lives in /run/haproxy (Debian's package makes it): check it with one we can create
    text = SHIPPED_CFG.read_text().replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock"))
    _haproxy_check(text, tmp_path)


def test_the_balancer_reads_what_the_replicas_send() -> None:
    text = SHIPPED_CFG.read_text()
    assert f"stick store-response res.hdr({SESSION_HEADER})" in text
    assert "stick match path,field(4,/) if { path_beg /api/sessions/ }" in text
    assert f"stick match url_param({SESSION_PARAM})" in text
    assert "agent-check agent-port 8081" in text and "weight 100" in text


def test_deploy_haproxy_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "etc" / "haproxy.cfg"
    argv = ["deploy", "haproxy", "--replica", "10.0.0.11:8080:8081", "--replica", "10.0.0.12:8080:8081"]
    assert main([*argv, "-o", str(out)]) == 0
    assert out.read_text() == SHIPPED_CFG.read_text()
    assert main(argv) == 0  # no -o: stdout
    assert capsys.readouterr().out == SHIPPED_CFG.read_text()
    assert main(["deploy", "haproxy", "--replica", "10.0.0.11"]) == 2
    assert "HOST:PORT or HOST:PORT:AGENT_PORT" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one of --replica / --discover is required
        main(["deploy", "haproxy"])


# --- the generator -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "replica"),
    [
        ("10.0.0.11:8080:8081", Replica("10.0.0.11", 8080, 8081)),
        ("avatar-1.internal:8080", Replica("avatar-1.internal", 8080, None)),
        ("[fd00::5]:8080:9000", Replica("fd00::5", 8080, 9000)),
    ],
)
def test_parse_replica(spec: str, replica: Replica) -> None:
    assert parse_replica(spec) == replica


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("10.0.0.11", "HOST:PORT or HOST:PORT:AGENT_PORT"),
        ("10.0.0.11:80:81:82", "HOST:PORT or HOST:PORT:AGENT_PORT"),
        ("10.0.0.11:http", "PORT must be a port number"),
        ("10.0.0.11:8080:70000", "AGENT_PORT must be a port number"),
        ("10.0.0.11:8080:8080", "must differ"),
        ("bad_host!:8080", "neither an IP address nor a host name"),
        ("fd00::5:8080", "HOST:PORT or HOST:PORT:AGENT_PORT"),
        ("[fd00::5:8080", "[ADDR]:PORT"),
    ],
)
def test_parse_replica_refuses(spec: str, message: str) -> None:
    with pytest.raises(DeployConfigError, match=message.replace("[", r"\[")):
        parse_replica(spec)


def test_generated_configs_pass_haproxy_check(tmp_path: Path) -> None:
    replicas = (parse_replica("10.0.0.11:8080:8081"), parse_replica("[fd00::12]:8080"))
    config = HAProxyConfig(replicas=replicas, stats_socket=str(tmp_path / "admin.sock"))
    text = config.render()
    assert "server replica1 10.0.0.11:8080 agent-check agent-port 8081 agent-inter 1s\n" in text
    assert "    # no agent port" in text and "server replica2 [fd00::12]:8080\n" in text
    _haproxy_check(text, tmp_path)
    # the header says how to write this file again
    assert text.splitlines()[1] == f"# Written by: {config.command()}"
    assert config.command() == (
        "splatcast deploy haproxy --replica 10.0.0.11:8080:8081 --replica '[fd00::12]:8080' "
        f"--stats-socket {tmp_path / 'admin.sock'}"
    )


def test_generated_tls_config_passes_haproxy_check(tmp_path: Path) -> None:
    pem = tmp_path / "site.pem"
    pem.write_bytes(_self_signed_pem())
    config = HAProxyConfig(
        replicas=(parse_replica("127.0.0.1:8080:8081"),), tls_cert=str(pem), stats_socket=None
    )
    text = config.render()
    assert f"bind :443 ssl crt {pem}" in text and "redirect scheme https" in text
    assert "stats socket" not in text
    _haproxy_check(text, tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "name the replicas"),
        ({"replicas": (Replica("a", 1, None),), "discover": Replica("b", 1, 2)}, "not both"),
        ({"replicas": (Replica("a", 1, None), Replica("a", 1, 2))}, "named twice"),
        ({"replicas": (Replica("a", 1, None),), "bind": ()}, "--bind"),
        ({"replicas": (Replica("a", 1, None),), "bind": (":80 ssl",)}, "no spaces"),
        ({"discover": Replica("b", 1, 2), "slots": 0}, "--slots"),
        ({"replicas": (Replica("a", 1, None),), "check_inter_s": 0.0}, "intervals"),
    ],
)
def test_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployConfigError, match=message):
        HAProxyConfig(**kwargs).render()


def _self_signed_pem() -> bytes:
    """A throwaway certificate + key (cryptography ships with aiortc)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM) + key_pem
