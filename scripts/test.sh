#!/usr/bin/env bash
# Runs every check and test:
#   1. formatting, lints and module structure: `cargo fmt --check`, `cargo clippy
#      --workspace --all-targets -- -D warnings` (lint table in Cargo.toml), and no import
#      cycle between the modules of any crate (scripts/module_map.py),
#   2. installs the real client SDKs the compatibility tests drive (tests/compat/setup.sh),
#   3. validates the deployment artefacts (deploy/checks/run.sh: Helm, Kubernetes schemas,
#      Compose, Dockerfile) when present,
#   4. fuzzes each decoder for a bounded time (fuzz/run.sh, FUZZ_SECONDS per target),
#   5. builds and runs the workspace's tests (unit tests, real node processes, real
#      redis-server processes, real SDKs).
# SKIP_FUZZ=1 / SKIP_DEPLOY_CHECKS=1 skip steps 4 / 3 for a quick local run. Extra
# arguments go to `cargo test` (e.g. ./scripts/test.sh -- --nocapture).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> cargo fmt --all -- --check"
cargo fmt --all -- --check
echo "==> cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> scripts/module_map.py --check"
python3 scripts/module_map.py --check

echo "==> tests/compat/setup.sh"
tests/compat/setup.sh

if [ "${SKIP_DEPLOY_CHECKS:-0}" != 1 ] && [ -x deploy/checks/run.sh ]; then
    echo "==> deploy/checks/run.sh"
    deploy/checks/run.sh
fi

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    echo "==> fuzz/run.sh (${FUZZ_SECONDS:=15}s per target)"
    FUZZ_SECONDS="$FUZZ_SECONDS" fuzz/run.sh
fi

echo "==> cargo test --workspace --locked --no-fail-fast $*"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
set -e
passed="$(grep -oE '^test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')"
failed="$(grep -oE '^test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | awk '{s += $6} END {print s + 0}')"
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
