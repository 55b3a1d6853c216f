#!/usr/bin/env python3
"""Part of e2e_local.sh: with a real Prometheus scraping the e2e nodes, run every query of
docs/grafana-dashboard.json and check that the alert rules of docs/OPERATIONS.md evaluate.

    e2e_prometheus.py write-config WORKDIR NODE_TARGETS   # prometheus.yml + alerts.yml
    e2e_prometheus.py check PROMETHEUS_URL                # after traffic

Standard library only (runs with the system python3).
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Queries that must return data after the e2e traffic (connects, XADD publishes, one drain).
MUST_HAVE_DATA = [
    "ferrocast_ready",
    "ferrocast_connections",
    "ferrocast_messages_sent_total",
    "ferrocast_messages_received_total",
    "ferrocast_publish_duration_seconds",
    "ferrocast_fanout_duration_seconds",
    "ferrocast_disconnects_total",
    "ferrocast_api_calls_total",
]


def alert_rules_yaml() -> str:
    ops = (ROOT / "docs" / "OPERATIONS.md").read_text()
    m = re.search(r"```yaml\n(groups:.*?)```", ops, re.S)
    if not m:
        raise SystemExit("no alert rules block in docs/OPERATIONS.md")
    return m.group(1)


def write_config(work: str, targets: str) -> None:
    w = Path(work)
    (w / "alerts.yml").write_text(alert_rules_yaml())
    tlist = ", ".join(f"'{t}'" for t in targets.split(","))
    (w / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files: ['alerts.yml']\n"
        "scrape_configs:\n"
        f"  - job_name: ferrocast\n    static_configs:\n      - targets: [{tlist}]\n"
    )


def api(base: str, path: str, **params) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def check(base: str) -> int:
    dash = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    failures = []
    with_data = set()
    for title, expr in exprs:
        q = expr.replace("$__rate_interval", "30s").replace("$job", ".*").replace("$instance", ".*")
        try:
            res = api(base, "/api/v1/query", query=q)
        except Exception as e:  # noqa: BLE001
            failures.append(f"{title}: {q}: {e}")
            continue
        if res.get("status") != "success":
            failures.append(f"{title}: {q}: {res}")
            continue
        if res["data"]["result"]:
            for name in re.findall(r"ferrocast_[a-z_]+", expr):
                with_data.add(re.sub(r"_seconds_(bucket|count|sum)$", "_seconds", name))
    for metric in MUST_HAVE_DATA:
        if metric not in with_data:
            failures.append(f"no dashboard query on {metric} returned data")
    # Alert rules: loaded and evaluated without error.
    rules = api(base, "/api/v1/rules")["data"]["groups"]
    evaluated = [r for g in rules for r in g["rules"]]
    bad = [f"{r['name']}: {r.get('lastError')}" for r in evaluated if r.get("health") != "ok"]
    if not evaluated:
        failures.append("no alert rules loaded")
    failures += [f"alert rule {b}" for b in bad]
    firing = [r["name"] for r in evaluated if r.get("state") == "firing"]
    print(f"e2e: Prometheus: {len(exprs)} dashboard queries ran ({len(with_data)} metrics with data), "
          f"{len(evaluated)} alert rules evaluated (firing: {', '.join(firing) or 'none'})")
    for f in failures:
        print(f"e2e: FAIL {f}")
    return 1 if failures else 0


def main() -> int:
    if sys.argv[1] == "write-config":
        write_config(sys.argv[2], sys.argv[3])
        return 0
    if sys.argv[1] == "check":
        # Let at least two scrapes and one rule evaluation follow the traffic.
        time.sleep(3)
        return check(sys.argv[2])
    raise SystemExit(f"unknown command {sys.argv[1]}")


if __name__ == "__main__":
    sys.exit(main())
