#!/usr/bin/env bash
# Makes sure a `redis-server` binary is on PATH for the rate-limit tests.
# The tests start (and stop) their own servers on free loopback ports; this
# script only installs the Debian package `redis-server` when the binary is
# missing, and makes sure no system-wide instance is left running because of
# the install.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "redis-server: $(redis-server --version)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "redis-server is missing and apt-get is not available; install redis-server (>= 6) by hand" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "== installing redis-server (Debian package)"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101 keeps the package's service from being started: the tests
# run their own servers and nothing should be left listening on 6379.
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    CREATED_POLICY=1
fi
cleanup() {
    if [ "$CREATED_POLICY" -eq 1 ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT

if ! $SUDO apt-get install -y --no-install-recommends redis-server; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends redis-server
fi
echo "redis-server: $(redis-server --version)"
