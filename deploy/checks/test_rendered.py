"""What the Kubernetes schemas cannot tell about the rendered chart: that the objects fit
together (selectors, ports, probes, secrets, configuration) and that the shutdown timing
leaves the drain room to finish. Runs on every variant of chartlib.VARIANTS.

    $HOME/.cache/ferrocast-k8s-venv/bin/python -m pytest deploy/checks/test_rendered.py
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import tomllib

import pytest
import yaml

import chartlib as cl

VARIANTS = list(cl.VARIANTS)
# Sockets may take up to ~7 s to close after the drain window (see crates/ferrocast-server/src/serve.rs).
SOCKET_CLOSE_SECONDS = 7


def values_of(variant: str) -> dict:
    chart_defaults = yaml.safe_load((cl.CHART / "values.yaml").read_text())
    return cl._coalesce(chart_defaults, cl.load_values(cl.VARIANTS[variant]) or {})


def objs(variant: str) -> list[dict]:
    return list(cl.render_variant(variant)[1])


def of_kind(variant: str, kind: str) -> list[dict]:
    return [o for o in objs(variant) if o["kind"] == kind]


def one(variant: str, kind: str, name: str | None = None) -> dict:
    found = [o for o in of_kind(variant, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def deployment(variant: str) -> dict:
    return one(variant, "Deployment")


def container(variant: str) -> dict:
    cs = deployment(variant)["spec"]["template"]["spec"]["containers"]
    return next(c for c in cs if c["name"] == "ferrocast")


def config(variant: str) -> dict:
    cm = one(variant, "ConfigMap")
    return json.loads(cm["data"]["config.json"])


def seconds(duration: str) -> float:
    total, unit = 0.0, {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for n, u in re.findall(r"(\d+)(ms|s|m|h)", duration):
        total += int(n) * unit[u]
    return total


def workloads(variant: str) -> list[dict]:
    return [o for o in objs(variant) if o["kind"] in ("Deployment", "StatefulSet")]


def pod_labels(w: dict) -> dict:
    return w["spec"]["template"]["metadata"]["labels"]


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def resolve_port(c: dict, port) -> dict:
    """The container port a probe/Service port refers to (by name or number)."""
    for p in c.get("ports", []):
        if port == p.get("name") or port == p["containerPort"]:
            return p
    raise AssertionError(f"port {port!r} is not declared by container {c['name']}")


# --- selectors --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_workload_selectors_match_their_pod_labels(variant):
    for w in workloads(variant):
        assert matches(w["spec"]["selector"]["matchLabels"], pod_labels(w)), w["metadata"]["name"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_service_selects_exactly_one_workload_and_its_target_ports_exist(variant):
    for svc in of_kind(variant, "Service"):
        sel = svc["spec"]["selector"]
        hits = [w for w in workloads(variant) if matches(sel, pod_labels(w))]
        assert len(hits) == 1, f"Service {svc['metadata']['name']} selects {[w['metadata']['name'] for w in hits]}"
        containers = hits[0]["spec"]["template"]["spec"]["containers"]
        for port in svc["spec"]["ports"]:
            assert any(
                any(port["targetPort"] in (p.get("name"), p["containerPort"]) for p in c.get("ports", []))
                for c in containers
            ), f"Service {svc['metadata']['name']} targets undeclared port {port['targetPort']}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_grpc_api_port_is_declared_exposed_and_keyed_only_when_enabled(variant):
    enabled = bool((values_of(variant).get("config") or {}).get("grpc_api", {}).get("enabled"))
    d = deployment(variant)
    container = d["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    env = {e["name"] for e in container.get("env", [])}
    svc = one(variant, "Service", f"{d['metadata']['name']}-internal")
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    assert ("grpc-api" in ports) == enabled
    assert ("grpc-api" in svc_ports) == enabled
    assert ("FERROCAST_GRPC_API_KEY" in env) == enabled
    if enabled:
        assert ports["grpc-api"] == values_of(variant)["ports"]["grpcApi"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_broker_services_select_the_deployment(variant):
    d = deployment(variant)
    full = d["metadata"]["name"]
    for name in (full, f"{full}-internal"):
        svc = one(variant, "Service", name)
        assert matches(svc["spec"]["selector"], pod_labels(d)), name
        assert svc["spec"].get("sessionAffinity", "None") == "None"


@pytest.mark.parametrize("variant", VARIANTS)
def test_pdb_hpa_networkpolicy_servicemonitor_and_affinity_target_the_broker(variant):
    d = deployment(variant)
    labels = pod_labels(d)
    for pdb in of_kind(variant, "PodDisruptionBudget"):
        assert matches(pdb["spec"]["selector"]["matchLabels"], labels)
    for hpa in of_kind(variant, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) == ("Deployment", d["metadata"]["name"])
        assert "replicas" not in d["spec"], "the HPA owns the replica count"
    for np in of_kind(variant, "NetworkPolicy"):
        sel = np["spec"]["podSelector"]["matchLabels"]
        assert any(matches(sel, pod_labels(w)) for w in workloads(variant)), np["metadata"]["name"]
    internal = one(variant, "Service", f"{d['metadata']['name']}-internal")
    public = one(variant, "Service", d["metadata"]["name"])
    for sm in of_kind(variant, "ServiceMonitor"):
        sel = sm["spec"]["selector"]["matchLabels"]
        assert matches(sel, internal["metadata"]["labels"]), "ServiceMonitor must select the internal Service"
        assert not matches(sel, public["metadata"]["labels"]), "ServiceMonitor must not select the public Service"
        ports = {p["name"] for p in internal["spec"]["ports"]}
        assert all(e["port"] in ports and e["path"] == "/metrics" for e in sm["spec"]["endpoints"])
    aff = d["spec"]["template"]["spec"].get("affinity", {}).get("podAntiAffinity", {})
    terms = [t["podAffinityTerm"] for t in aff.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    terms += aff.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    for t in terms:
        assert matches(t["labelSelector"]["matchLabels"], labels)
    if values_of(variant)["podAntiAffinity"] != "none":
        assert terms, "pod anti-affinity expected"


@pytest.mark.parametrize("variant", VARIANTS)
def test_ingress_routes_websocket_to_the_public_service(variant):
    for ing in of_kind(variant, "Ingress"):
        full = deployment(variant)["metadata"]["name"]
        svc = one(variant, "Service", full)
        names = {p["name"] for p in svc["spec"]["ports"]}
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == full
                assert backend["port"].get("name") in names
                assert path["path"].startswith("/connection")
        ann = ing["metadata"].get("annotations", {})
        assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600


# --- probes, ports, shutdown ------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_use_health_and_ready_on_the_client_port(variant):
    c = container(variant)
    client_port = resolve_port(c, "client")["containerPort"]
    expect = {"livenessProbe": "/health", "startupProbe": "/health", "readinessProbe": "/ready"}
    for probe, path in expect.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert resolve_port(c, get["port"])["containerPort"] == client_port, probe
    assert client_port == config(variant)["http_server"]["port"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_ports_8000_and_9000_in_container_services_and_config(variant):
    v = values_of(variant)
    c = container(variant)
    ports = {p["name"]: p["containerPort"] for p in c["ports"] if p["name"] != "grpc-api"}
    assert ports == {"client": v["ports"]["client"], "internal": v["ports"]["internal"]}
    assert ports == {"client": 8000, "internal": 9000}
    cfg = config(variant)["http_server"]
    assert (cfg["port"], cfg["internal_port"]) == (8000, 9000)
    full = deployment(variant)["metadata"]["name"]
    public = one(variant, "Service", full)["spec"]["ports"]
    internal = one(variant, "Service", f"{full}-internal")["spec"]["ports"]
    assert [(p["port"], resolve_port(c, p["targetPort"])["containerPort"]) for p in public] == [(8000, 8000)]
    internal = [p for p in internal if p["name"] != "grpc-api"]
    assert [(p["port"], resolve_port(c, p["targetPort"])["containerPort"]) for p in internal] == [(9000, 9000)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_grace_period_covers_prestop_drain_and_socket_close(variant):
    spec = deployment(variant)["spec"]["template"]["spec"]
    pre = container(variant)["lifecycle"]["preStop"]
    if "sleep" in pre:
        sleep = pre["sleep"]["seconds"]
    else:
        cmd = pre["exec"]["command"]
        assert cmd[0] == "sleep", cmd
        sleep = int(cmd[1])
    assert sleep >= 1, "a preStop sleep lets endpoints be removed before SIGTERM"
    drain = seconds(config(variant)["shutdown"]["drain_window"])
    assert drain == values_of(variant)["shutdown"]["drainWindowSeconds"]
    grace = spec["terminationGracePeriodSeconds"]
    assert sleep + drain < grace
    assert sleep + drain + SOCKET_CLOSE_SECONDS < grace, (sleep, drain, grace)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pod_hardening(variant):
    spec = deployment(variant)["spec"]["template"]["spec"]
    c = container(variant)
    assert spec["enableServiceLinks"] is False, "service links inject unknown FERROCAST_* variables"
    assert spec["securityContext"]["runAsNonRoot"] is True
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    for w in workloads(variant):
        for wc in w["spec"]["template"]["spec"]["containers"]:
            assert wc["securityContext"]["readOnlyRootFilesystem"] is True, w["metadata"]["name"]
            assert wc["securityContext"]["capabilities"]["drop"] == ["ALL"], w["metadata"]["name"]


# --- configuration and secrets ----------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_map_is_mounted_where_the_args_point(variant):
    d = deployment(variant)
    c = container(variant)
    cm = one(variant, "ConfigMap")
    vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in c["volumeMounts"] if vols[m["name"]].get("configMap"))
    assert vols[mount["name"]]["configMap"]["name"] == cm["metadata"]["name"]
    args = c["args"]
    assert args[:2] == ["serve", "--config"]
    path = args[2]
    assert os.path.dirname(path) == mount["mountPath"]
    assert os.path.basename(path) in cm["data"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_sets_internal_port_and_redis_engine_with_the_configured_address(variant):
    v = values_of(variant)
    cfg = config(variant)
    assert cfg["http_server"]["internal_port"] == 9000
    assert cfg["engine"]["type"] == "redis"
    full = deployment(variant)["metadata"]["name"]
    if v["redis"]["embedded"]["enabled"]:
        svc = one(variant, "Service", f"{full}-redis")
        assert cfg["engine"]["redis"]["address"] == [f"redis://{svc['metadata']['name']}:6379"]
        assert [p["port"] for p in svc["spec"]["ports"]] == [6379]
        one(variant, "StatefulSet", f"{full}-redis")
    else:
        assert cfg["engine"]["redis"]["address"] == v["redis"]["address"]
        assert not of_kind(variant, "StatefulSet")
    assert "hmac_secret_key" not in json.dumps(cfg) and '"key"' not in json.dumps(cfg.get("http_api", {}))


@pytest.mark.parametrize("variant", VARIANTS)
def test_referenced_secrets_exist(variant):
    """Every secretKeyRef points at a Secret of the release with that key, or at a Secret the
    values declare as pre-existing (secrets.existingSecret, redis.addressSecret)."""
    v = values_of(variant)
    rendered = {s["metadata"]["name"]: s for s in of_kind(variant, "Secret")}
    external = {}
    if v["secrets"]["existingSecret"]:
        external[v["secrets"]["existingSecret"]] = set(v["secrets"]["keys"].values())
    if v["redis"]["addressSecret"]["name"]:
        external.setdefault(v["redis"]["addressSecret"]["name"], set()).add(v["redis"]["addressSecret"]["key"])
    env = {e["name"]: e for e in container(variant)["env"]}
    for name in ("FERROCAST_CLIENT_TOKEN_HMAC_SECRET_KEY", "FERROCAST_HTTP_API_KEY"):
        assert "secretKeyRef" in env[name].get("valueFrom", {}), name
    refs = [e["valueFrom"]["secretKeyRef"] for e in env.values() if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs
    for ref in refs:
        if ref["name"] in rendered:
            assert ref["key"] in rendered[ref["name"]]["data"], ref
        else:
            assert ref["key"] in external.get(ref["name"], set()), f"{ref} is neither rendered nor declared"
    if v["secrets"]["existingSecret"]:
        assert not rendered, "existingSecret: the chart must not create its own Secret"
    if v["redis"]["addressSecret"]["name"]:
        assert env["FERROCAST_ENGINE_REDIS_ADDRESS"]["valueFrom"]["secretKeyRef"]["name"] == v["redis"]["addressSecret"]["name"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_checksum_annotation_follows_the_config(variant):
    ann = deployment(variant)["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", ann["checksum/config"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_ferrocast_accepts_the_rendered_config_and_pod_environment(variant, tmp_path):
    """`ferrocast checkconfig` on the rendered config.json with the container's environment:
    refuses unknown keys, bad values and unknown FERROCAST_ variables."""
    binary = cl.find_binary()
    if not binary:
        pytest.skip("no ferrocast binary (set DEPLOY_CHECKS_BIN or build target/release/ferrocast)")
    path = tmp_path / "config.json"
    path.write_text(one(variant, "ConfigMap")["data"]["config.json"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERROCAST_")}
    for e in container(variant)["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = "rt-ferrocast-5d8f7-abcde"
        elif e["name"] == "FERROCAST_ENGINE_REDIS_ADDRESS":
            env[e["name"]] = "redis://:secret@redis-a:6379,redis://:secret@redis-b:6379"
        else:
            env[e["name"]] = "a-secret-value"
    r = subprocess.run([binary, "checkconfig", str(path)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


# --- the values schema against ferrocast's own configuration keys ------------------------------

# Keys the chart sets itself (or takes from Secrets) and therefore refuses in `config`.
MANAGED = {
    "http_server.address", "http_server.port", "http_server.internal_port", "http_server.internal_address",
    "node.name", "client.token.hmac_secret_key", "http_api.key", "engine.type", "engine.redis.address",
    "shutdown.drain_window", "grpc_api.address", "grpc_api.port", "grpc_api.key",
}


def _config_keys_from_defaults() -> set[str]:
    text = (cl.ROOT / "crates" / "ferrocast-server" / "src" / "default_config.toml").read_text()
    # Keys documented as comments (optional keys without a default) count too.
    text = re.sub(r"^# (internal_port|internal_address) = ", r"\1 = ", text, flags=re.M)
    keys = set()

    def walk(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                keys.add(f"{prefix}{k}")

    walk("", tomllib.loads(text))
    return keys


def _config_keys_from_schema() -> set[str]:
    schema = json.loads((cl.CHART / "values.schema.json").read_text())
    keys = set()

    def walk(prefix, s):
        for k, sub in s.get("properties", {}).items():
            if sub.get("type") == "object" and "properties" in sub:
                walk(f"{prefix}{k}.", sub)
            else:
                keys.add(f"{prefix}{k}")

    walk("", schema["properties"]["config"])
    return keys


def test_values_schema_knows_every_ferrocast_config_key():
    """default_config.toml (what `ferrocast genconfig` prints) and the chart's `config` schema
    list the same keys, except the ones the chart manages. Fails when a key is added to
    ferrocast and not to values.schema.json (or removed)."""
    from_defaults = _config_keys_from_defaults() - MANAGED
    from_schema = _config_keys_from_schema()
    assert from_defaults - from_schema == set(), "keys missing from values.schema.json config"
    assert from_schema - from_defaults == set(), "keys in values.schema.json that ferrocast does not know"
    schema = json.loads((cl.CHART / "values.schema.json").read_text())
    ns = schema["properties"]["config"]["properties"]["channel"]["properties"]["namespaces"]["items"]["properties"]
    wn = schema["properties"]["config"]["properties"]["channel"]["properties"]["without_namespace"]["properties"]
    assert set(ns) == set(wn) | {"name"}


def test_values_schema_accepts_the_variants_and_refuses_bad_values():
    for name, path in cl.VARIANTS.items():
        assert cl.values_schema_errors(cl.load_values(path) or {}) == [], name
    assert cl.values_schema_errors({"replicaCount": "three"})


def test_strict_kubernetes_schema_catches_unknown_fields():
    """Negative control: the validator used by check_chart.py does reject bad objects."""
    d = copy.deepcopy(deployment("default"))
    d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/ready"
    d["spec"]["replicas"] = "3"
    errors = cl.validate_object(d)
    assert any("pathh" in e for e in errors) and any("replicas" in e for e in errors), errors
