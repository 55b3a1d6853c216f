#!/usr/bin/env bash
# Installs the real client SDKs used by the compatibility tests:
#   tests/compat/.venv          centrifuge-python, cent, PyJWT (requirements.txt)
#   tests/compat/node_modules   centrifuge (npm), ws (package-lock.json)
# Idempotent: does nothing when both are installed from the current requirements.txt /
# package-lock.json. Python: $COMPAT_PYTHON, default python3 (needs the venv and ensurepip
# modules: Debian's python3-venv; .ci/run installs it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${COMPAT_PYTHON:-python3}"
VENV=.venv
PY_STAMP="$VENV/.requirements.sha256"
NODE_STAMP=node_modules/.package-lock.sha256

say() { echo "compat setup: $*"; }
fail() { echo "compat setup: error: $*" >&2; exit 1; }

# --- Python -------------------------------------------------------------------------------
py_want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$PY_STAMP" 2>/dev/null)" = "$py_want" ] \
    && "$VENV/bin/python" -c 'import centrifuge, cent, jwt' 2>/dev/null; then
    say "python venv up to date ($VENV)"
else
    if ! [ -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        command -v "$PYTHON" >/dev/null || fail "$PYTHON not found"
        say "creating python venv $VENV with $("$PYTHON" --version 2>&1)"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" \
            || fail "'$PYTHON -m venv' failed (on Debian: apt-get install python3-venv)"
    fi
    say "pip install -r requirements.txt"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        -r requirements.txt || fail "pip install failed"
    "$VENV/bin/python" -c 'import centrifuge, cent, jwt' \
        || fail "the installed packages do not import"
    echo "$py_want" > "$PY_STAMP"
    say "python packages installed: $("$VENV/bin/python" -m pip freeze --disable-pip-version-check \
        | grep -iE '^(centrifuge-python|cent|pyjwt)==' | tr '\n' ' ')"
fi

# --- Node.js ------------------------------------------------------------------------------
command -v node >/dev/null || fail "node not found (on Debian: apt-get install nodejs npm)"
command -v npm >/dev/null || fail "npm not found (on Debian: apt-get install npm)"
node_want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1) $(node --version)"
if [ -d node_modules ] && [ "$(cat "$NODE_STAMP" 2>/dev/null)" = "$node_want" ]; then
    say "node_modules up to date"
else
    say "npm ci (node $(node --version), npm $(npm --version 2>/dev/null))"
    npm ci --no-audit --no-fund --loglevel=error || fail "npm ci failed"
    node --input-type=module -e "import 'centrifuge'; import 'ws';" \
        || fail "the installed npm packages do not import"
    echo "$node_want" > "$NODE_STAMP"
    say "npm packages installed: centrifuge@$(node -p "require('./node_modules/centrifuge/package.json').version") ws@$(node -p "require('./node_modules/ws/package.json').version")"
fi
say "done"
