#!/usr/bin/env bash
# Checks of the deploy artefacts without Docker or Kubernetes:
#   Helm chart: lint --strict, render with value variants, every object validated strictly
#               against the Kubernetes 1.30 JSON schemas, bad values refused
#   Compose:    `docker-compose config -q` with the real Compose v2 binary
#   Dockerfile: hadolint --failure-threshold error
#   Semantics:  pytest test_rendered.py (chart), test_compose.py (compose, HAProxy, image) and
#               test_docs.py (metrics in docs/OPERATIONS.md and the Grafana dashboard; PromQL
#               checked by promtool when the Debian package prometheus is installed)
#   Optional:   --e2e runs the compose topology on loopback (haproxy, redis-server, node; with
#               prometheus installed, the dashboard queries and alert rules on real metrics)
#
# Usage: deploy/checks/run.sh [--e2e]      (or DEPLOY_CHECKS_E2E=1)
# Tools live in a venv at $DEPLOY_CHECKS_VENV (default $HOME/.cache/ferrocast-k8s-venv),
# created on first use from deploy/checks/requirements.txt (~530 MB, the slow part) and reused.
# A ferrocast binary ($DEPLOY_CHECKS_BIN, target/release or target/debug) enables the checks that
# run `ferrocast checkconfig` and the image's HEALTHCHECK; without one they are skipped.
# Exit status: 0 when every check passed, 1 otherwise.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${DEPLOY_CHECKS_VENV:-$HOME/.cache/ferrocast-k8s-venv}"
E2E="${DEPLOY_CHECKS_E2E:-0}"
for arg in "$@"; do
  case "$arg" in
    --e2e) E2E=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

declare -a NAMES=() RESULTS=() NOTES=()
record() { NAMES+=("$1"); RESULTS+=("$2"); NOTES+=("${3:-}"); }
section() { printf '\n=== %s\n' "$1"; }

# Compose interpolates from the environment; keep the developer's shell out of the checks.
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(FERROCAST_[A-Za-z0-9_]*\)=.*/\1/p')
if [[ -n "${DEPLOY_CHECKS_BIN:-}" ]]; then export DEPLOY_CHECKS_BIN; DEPLOY_CHECKS_BIN="$(realpath "$DEPLOY_CHECKS_BIN")"; fi

# --- tools ------------------------------------------------------------------------------------
section "tools ($VENV)"
T0=$SECONDS
PY=""
for cand in python3 python3.13 python3.12 python3.11; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY="$cand"; break
  fi
done
REQ="$HERE/requirements.txt"
REQ_SUM="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.ferrocast-requirements" 2>/dev/null)" == "$REQ_SUM" ]]; then
  echo "venv up to date"
elif [[ -z "$PY" ]]; then
  echo "no Python >= 3.11 to create the venv"
else
  { [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"; } \
    && "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" \
    && echo "$REQ_SUM" >"$VENV/.ferrocast-requirements" \
    && echo "venv installed in $((SECONDS - T0)) s"
fi
if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.ferrocast-requirements" 2>/dev/null)" == "$REQ_SUM" ]]; then
  record "tools (venv)" PASS "$((SECONDS - T0)) s"
else
  record "tools (venv)" FAIL "could not create $VENV"
  echo "cannot continue without the tools"
  printf '\nSUMMARY\n  FAIL tools (venv)\n'
  exit 1
fi
VPY="$VENV/bin/python"
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
COMPOSE="$SITE/compose/docker-compose"
HADOLINT="$VENV/bin/hadolint"
[[ -x "$COMPOSE" ]] || chmod +x "$COMPOSE" 2>/dev/null
BIN="$(cd "$HERE" && "$VPY" -c 'import chartlib; print(chartlib.find_binary() or "")')"
echo "ferrocast binary: ${BIN:-none (checkconfig and HEALTHCHECK tests will be skipped)}"

# --- Helm -------------------------------------------------------------------------------------
section "Helm chart: lint, render, Kubernetes schemas, bad values"
if (cd "$HERE" && "$VPY" check_chart.py); then
  record "helm lint/template/kube schemas/bad values" PASS
else
  record "helm lint/template/kube schemas/bad values" FAIL
fi

# --- Compose ----------------------------------------------------------------------------------
section "docker-compose config -q ($("$COMPOSE" version --short 2>/dev/null || echo '?'))"
if (cd "$ROOT" && "$COMPOSE" -f docker-compose.yml config -q); then
  # Negative control: the binary must fail on a broken file (the venv's wrapper always exits 0).
  BAD="$(mktemp --suffix=.yml)"
  printf 'services:\n  x:\n    image: redis\n    ports: 8000\n    restart: sometimes\n' >"$BAD"
  if "$COMPOSE" -f "$BAD" config -q >/dev/null 2>&1; then
    record "compose config -q" FAIL "negative control passed: not the real compose binary?"
  else
    echo "docker-compose.yml is valid (and a broken file is refused)"
    record "compose config -q" PASS
  fi
  rm -f "$BAD"
else
  record "compose config -q" FAIL
fi

# --- Dockerfile -------------------------------------------------------------------------------
section "hadolint $("$HADOLINT" --version 2>/dev/null | awk '{print $NF}')"
if (cd "$ROOT" && "$HADOLINT" --failure-threshold error Dockerfile); then
  BAD="$(mktemp)"
  printf 'FROM debian:bookworm-slim\nWORKDIR relative/dir\n' >"$BAD"   # DL3000 is an error
  if "$HADOLINT" --failure-threshold error "$BAD" >/dev/null 2>&1; then
    record "hadolint" FAIL "negative control passed"
  else
    echo "Dockerfile passes (all rules, not only errors: $("$HADOLINT" Dockerfile >/dev/null 2>&1 && echo clean || echo 'warnings, see above'))"
    record "hadolint" PASS
  fi
  rm -f "$BAD"
else
  record "hadolint" FAIL
fi

# --- semantics --------------------------------------------------------------------------------
section "pytest test_rendered.py test_compose.py test_docs.py"
OUT="$(mktemp)"
(cd "$HERE" && DEPLOY_CHECKS_BIN="${BIN:-none}" "$VPY" -m pytest -q -rs -p no:cacheprovider test_rendered.py test_compose.py test_docs.py) 2>&1 | tee "$OUT"
rc=${PIPESTATUS[0]}
LAST="$(grep -E '[0-9]+ (passed|failed)' "$OUT" | tail -n1 | sed 's/^=* *//; s/ *=*$//')"
rm -f "$OUT"
if [[ $rc == 0 ]]; then record "pytest (chart, compose, image, docs semantics)" PASS "$LAST"; else record "pytest (chart, compose, image, docs semantics)" FAIL "$LAST"; fi

# --- optional end to end ----------------------------------------------------------------------
if [[ "$E2E" == 1 ]]; then
  section "e2e: compose topology on loopback (e2e_local.sh)"
  DEPLOY_CHECKS_BIN="${BIN:-none}" "$HERE/e2e_local.sh"
  rc=$?
  case $rc in
    0) record "e2e (haproxy + 3 nodes + redis, drain)" PASS ;;
    77) record "e2e (haproxy + 3 nodes + redis, drain)" SKIP "prerequisites missing" ;;
    *) record "e2e (haproxy + 3 nodes + redis, drain)" FAIL ;;
  esac
else
  record "e2e (haproxy + 3 nodes + redis, drain)" SKIP "not requested (--e2e)"
fi

# --- summary ----------------------------------------------------------------------------------
printf '\nSUMMARY (%d s)\n' "$SECONDS"
failed=0
for i in "${!NAMES[@]}"; do
  printf '  %-4s %s%s\n' "${RESULTS[$i]}" "${NAMES[$i]}" "${NOTES[$i]:+  (${NOTES[$i]})}"
  [[ "${RESULTS[$i]}" == FAIL ]] && failed=$((failed + 1))
done
if ((failed)); then
  echo "deploy checks: $failed failed"
  exit 1
fi
echo "deploy checks: all passed"
