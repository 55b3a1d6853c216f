"""docs/OPERATIONS.md and docs/grafana-dashboard.json against the metrics the code exports:
every metric named in crates/ferrocast-node/src/metrics.rs (plus ferrocast_ready) is
documented and charted, nothing else is referenced, the dashboard is well-formed, and the
PromQL of the alerts and panels parses (with promtool, when installed).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

import chartlib as cl

OPS = (cl.ROOT / "docs" / "OPERATIONS.md").read_text()
DASHBOARD = json.loads((cl.ROOT / "docs" / "grafana-dashboard.json").read_text())
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exported_metrics() -> set[str]:
    src = (cl.ROOT / "crates" / "ferrocast-node" / "src" / "metrics.rs").read_text()
    names = set(re.findall(r'pub const [A-Z_]+: &str = "(ferrocast_[a-z_]+)";', src))
    server = (cl.ROOT / "crates" / "ferrocast-server" / "src" / "observability.rs").read_text()
    names |= set(re.findall(r'gauge!\("(ferrocast_[a-z_]+)"\)', server))
    assert len(names) >= 14, names
    return names


def base_name(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.endswith("_seconds" + suffix):
            return name[: -len(suffix)]
    return name


def panel_exprs() -> list[str]:
    return [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]


def alert_rules() -> dict:
    block = re.search(r"```yaml\n(groups:.*?)```", OPS, re.S)
    assert block, "alert rules block in OPERATIONS.md"
    return yaml.safe_load(block.group(1))


def test_operations_documents_every_exported_metric():
    for name in exported_metrics():
        assert f"`{name}`" in OPS, name


def test_dashboard_charts_every_metric_and_only_real_ones():
    exported = exported_metrics()
    used = {base_name(n) for e in panel_exprs() for n in re.findall(r"ferrocast_[a-z_]+", e)}
    assert used - exported == set(), "dashboard references metrics the code does not export"
    assert exported - used == set(), "metrics missing from the dashboard"


def test_alerts_reference_only_real_metrics():
    exported = exported_metrics()
    for group in alert_rules()["groups"]:
        for rule in group["rules"]:
            for n in re.findall(r"ferrocast_[a-z_]+", rule["expr"]):
                assert base_name(n) in exported, (rule["alert"], n)


def test_dashboard_structure():
    d = DASHBOARD
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]
            for t in p["targets"]:
                assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
                for var in re.findall(r"\$(\w+)", t["expr"]):
                    assert var in variables | {"__rate_interval"}, (p["title"], var)


def test_promql_parses_with_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian package prometheus)")
    rules = tmp_path / "alerts.yml"
    rules.write_text(yaml.safe_dump(alert_rules()))
    r = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # Dashboard queries as recording rules, with Grafana variables replaced.
    recs = []
    for i, e in enumerate(panel_exprs()):
        e = e.replace("$__rate_interval", "1m").replace("$job", ".*").replace("$instance", ".*")
        recs.append({"record": f"dashboard:panel_{i}", "expr": e})
    panels = tmp_path / "dashboard.yml"
    panels.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recs}]}))
    r = subprocess.run([promtool, "check", "rules", str(panels)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
