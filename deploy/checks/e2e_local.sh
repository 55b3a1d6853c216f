#!/usr/bin/env bash
# Runs the docker-compose.yml topology without Docker, on this machine's loopback: redis-server,
# three `ferrocast serve` processes with deploy/compose/ferrocast.toml and the compose
# environment, and HAProxy with deploy/compose/haproxy.cfg (host names and bind addresses
# rewritten to 127.0.0.1 ports). Then e2e_client.mjs drives real centrifuge-js clients through
# the load balancer, publishes with XADD and drains one node with SIGTERM.
#
# Needs: haproxy, redis-server, redis-cli, node + npm, and a ferrocast binary
# ($DEPLOY_CHECKS_BIN, else target/release/ferrocast, else target/debug/ferrocast).
# Optional: chromium (the demo page is driven in a headless browser with puppeteer-core;
# DEPLOY_CHECKS_SCREENSHOT=/path.png keeps a screenshot) and prometheus (the Grafana
# dashboard queries and the alert rules of docs/OPERATIONS.md run against the nodes).
# Exit code 0: passed; 1: failed; 77: skipped (something missing).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${DEPLOY_CHECKS_BIN:-}"
if [[ -z "$BIN" ]]; then
  for b in "$ROOT/target/release/ferrocast" "$ROOT/target/debug/ferrocast"; do
    [[ -x "$b" ]] && { BIN="$b"; break; }
  done
fi
missing=()
for t in haproxy redis-server redis-cli node npm curl; do
  command -v "$t" >/dev/null || missing+=("$t")
done
[[ -n "$BIN" && -x "$BIN" ]] || missing+=("ferrocast binary")
if ((${#missing[@]})); then
  echo "e2e: SKIP, missing: ${missing[*]}"
  exit 77
fi

NODE_DIR="${DEPLOY_CHECKS_NODE_DIR:-$HOME/.cache/ferrocast-e2e-node}"
if [[ ! -d "$NODE_DIR/node_modules/centrifuge" || ! -d "$NODE_DIR/node_modules/ws" ]]; then
  mkdir -p "$NODE_DIR"
  npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" centrifuge@5.8.0 ws@8.23.0 >/dev/null \
    || { echo "e2e: FAIL, npm install centrifuge ws"; exit 1; }
fi

# Ports (override E2E_PORT_BASE if they are taken): base = LB, base+1..3 = nodes,
# base+1001..1003 = node internal ports, base+1000 = LB internal, base+404 = stats, base+390 = redis.
B="${E2E_PORT_BASE:-18000}"
LB=$B; LB_INT=$((B + 1000)); STATS=$((B + 404)); REDIS=$((B + 390))
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "e2e: FAIL, $*"
  for f in "$WORK"/*.log; do echo "---- $(basename "$f") (last 15 lines)"; grep -v -e "^ *[0-9]*: " -e "^ *at " "$f" | tail -n 15; done
  exit 1
}

redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS" ping >/dev/null 2>&1 || fail "redis-server did not start"

SECRET=e2e-secret
declare -A NODE_PID
for i in 1 2 3; do
  # The same configuration and environment as the compose nodes; only addresses differ.
  env -i PATH="$PATH" HOME="$HOME" FERROCAST_ENGINE_TYPE=redis \
    FERROCAST_ENGINE_REDIS_ADDRESS="redis://127.0.0.1:$REDIS" \
    FERROCAST_CLIENT_TOKEN_HMAC_SECRET_KEY="$SECRET" \
    FERROCAST_HTTP_API_KEY=e2e-api-key \
    FERROCAST_HTTP_SERVER_ADDRESS=127.0.0.1 \
    FERROCAST_HTTP_SERVER_PORT=$((B + i)) \
    FERROCAST_HTTP_SERVER_INTERNAL_PORT=$((B + 1000 + i)) \
    "$BIN" serve --config "$ROOT/deploy/compose/ferrocast.toml" --name "ferrocast$i" \
    >"$WORK/ferrocast$i.log" 2>&1 &
  NODE_PID[$i]=$!
  PIDS+=($!)
done

# Optional: a real Prometheus scraping the nodes, to run the dashboard queries and alert rules.
PROM=$((B + 90))
if command -v prometheus >/dev/null; then
  python3 "$ROOT/deploy/checks/e2e_prometheus.py" write-config "$WORK" \
    "127.0.0.1:$((B + 1001)),127.0.0.1:$((B + 1002)),127.0.0.1:$((B + 1003))"
  prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" \
    --web.listen-address="127.0.0.1:$PROM" >"$WORK/prometheus.log" 2>&1 &
  PIDS+=($!)
else
  echo "e2e: prometheus not installed: dashboard queries and alert rules not run (Debian package prometheus)"
fi

mkdir -p "$WORK/demo"
cp "$ROOT/deploy/compose/demo/index.html" "$WORK/demo/index.html"
python3 - "$ROOT/deploy/compose/haproxy.cfg" "$WORK" "$B" <<'EOF'
import re, sys
src, work, base = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(src).read()
text = re.sub(r"\bferrocast([123]):8000\b", lambda m: f"127.0.0.1:{base + int(m.group(1))}", text)
text = re.sub(r"\bferrocast([123]):9000\b", lambda m: f"127.0.0.1:{base + 1000 + int(m.group(1))}", text)
for port, new in ((8000, base), (9000, base + 1000), (8404, base + 404)):
    text = text.replace(f"bind :{port}\n", f"bind 127.0.0.1:{new}\n")
text = text.replace("/usr/local/etc/haproxy/demo/", f"{work}/demo/")
open(f"{work}/haproxy.cfg", "w").write(text)
EOF
haproxy -c -f "$WORK/haproxy.cfg" >"$WORK/haproxy-check.log" 2>&1 || fail "haproxy -c rejected the configuration"
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)

# Wait until HAProxy sees all three nodes ready (stats CSV: status column 18).
ok=0
for _ in $(seq 100); do
  up=$(curl -s "http://127.0.0.1:$STATS/;csv" | awk -F, '$1=="ferrocast_public" && $2 ~ /^ferrocast[123]$/ && $18=="UP"' | wc -l)
  [[ "$up" == 3 ]] && { ok=1; break; }
  sleep 0.2
done
((ok)) || fail "HAProxy did not mark the three nodes UP via /ready"
echo "e2e: HAProxy marks the 3 nodes UP (health check GET /ready)"

page=$(curl -s -w '\n%{http_code}' "http://127.0.0.1:$LB/")
[[ "$(tail -n1 <<<"$page")" == 200 && "$page" == *"centrifuge@5"* ]] || fail "demo page not served on /"
[[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$LB/health")" == 200 ]] || fail "/health via LB"
[[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$LB/api/info")" == 404 ]] || fail "API reachable on the public port"
info=$(curl -s -X POST -H "X-API-Key: e2e-api-key" -d '{}' "http://127.0.0.1:$LB_INT/api/info")
[[ "$info" == *'"nodes"'* ]] || fail "server API through the internal LB port: $info"
echo "e2e: demo page on /, /health through the LB, API only on the internal port"

# Optional: the demo page in headless Chromium (Debian package chromium + npm puppeteer-core).
CHROMIUM="$(command -v chromium || command -v chromium-browser || true)"
if [[ -n "$CHROMIUM" ]]; then
  BROWSER_DIR="${DEPLOY_CHECKS_BROWSER_DIR:-$HOME/.cache/ferrocast-e2e-browser}"
  if [[ ! -d "$BROWSER_DIR/node_modules/puppeteer-core" ]]; then
    mkdir -p "$BROWSER_DIR"
    # puppeteer-core 23 still supports Node 18/20; it drives the system Chromium, downloads none.
    npm install --silent --no-audit --no-fund --prefix "$BROWSER_DIR" puppeteer-core@23.11.1 >/dev/null \
      || fail "npm install puppeteer-core"
  fi
  E2E_BROWSER_MODULES="$BROWSER_DIR/node_modules" \
  E2E_NODE_MODULES="$NODE_DIR/node_modules" \
  E2E_CHROMIUM="$CHROMIUM" \
  E2E_PAGE_URL="http://127.0.0.1:$LB/" \
  E2E_SECRET="$SECRET" \
  E2E_REDIS_PORT="$REDIS" \
  E2E_SCREENSHOT="${DEPLOY_CHECKS_SCREENSHOT:-}" \
    node "$ROOT/deploy/checks/e2e_browser.mjs" || fail "demo page in Chromium (e2e_browser.mjs)"
else
  echo "e2e: chromium not installed: the demo page was not run in a browser (Debian package chromium)"
fi

E2E_NODE_MODULES="$NODE_DIR/node_modules" \
E2E_WS_URL="ws://127.0.0.1:$LB/connection/websocket" \
E2E_SECRET="$SECRET" \
E2E_REDIS_PORT="$REDIS" \
E2E_METRICS_URLS="http://127.0.0.1:$((B + 1001))/metrics,http://127.0.0.1:$((B + 1002))/metrics,http://127.0.0.1:$((B + 1003))/metrics" \
E2E_DRAIN_PID="${NODE_PID[2]}" \
E2E_DRAIN_METRICS_URL="http://127.0.0.1:$((B + 1002))/metrics" \
  node "$ROOT/deploy/checks/e2e_client.mjs" || fail "e2e_client.mjs"

if command -v prometheus >/dev/null; then
  curl -s -o /dev/null --retry 20 --retry-connrefused --retry-delay 1 "http://127.0.0.1:$PROM/-/ready" || fail "prometheus did not start"
  python3 "$ROOT/deploy/checks/e2e_prometheus.py" check "http://127.0.0.1:$PROM" || fail "dashboard queries / alert rules against real metrics"
fi

wait "${NODE_PID[2]}"
rc=$?
[[ $rc == 0 ]] || fail "drained node exited with $rc (expected 0)"
grep -q "draining" "$WORK/ferrocast2.log" || fail "drained node did not log its drain"
echo "e2e: drained node exited 0"
echo "e2e: PASS"
