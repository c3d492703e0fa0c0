#!/usr/bin/env bash
# The project's one test command (README, CI): formatting, lints, then every
# test. Everything a test needs is started by the tests themselves on
# loopback ports; nothing has to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
# One-shot builds gain nothing from incremental caches, which would double the
# disk a clean run needs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

echo "== redis-server (rate-limit tests start their own, on free loopback ports)"
./scripts/redis.sh

echo "== python tools (the OpenAPI tests validate with them)"
./scripts/python-tools.sh
# Missing tools then fail the OpenAPI tests instead of skipping them.
export PROTOGATE_REQUIRE_PYTHON_TOOLS=1
echo "== deploy checks (Dockerfile, deploy/kubernetes: docs/deployment.md)" && ./scripts/check-deploy.sh

echo "== cargo test"
cargo test --locked --all-targets
