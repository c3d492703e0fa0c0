#!/usr/bin/env bash
# Makes the Python tools the OpenAPI tests call: a virtualenv under
# target/python-tools with openapi-spec-validator (a standard OpenAPI 3.1
# validator) and jsonschema (answers checked against their schemas).
# Idempotent: an existing venv with the pinned versions is kept.
# tests/openapi.rs finds the venv there (PROTOGATE_PYTHON_TOOLS overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${PROTOGATE_PYTHON_TOOLS:-target/python-tools}"
PINS=("openapi-spec-validator==0.9.0" "jsonschema==4.26.0")

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

PYTHON="$(command -v python3 || true)"
if [ -z "$PYTHON" ]; then
    echo "python3 is missing; install python3 (>= 3.9) with venv and pip" >&2
    exit 1
fi
echo "== creating $VENV with ${PINS[*]}"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
echo "python tools: $VENV (${PINS[*]})"
