#!/usr/bin/env bash
# The load bench in one command: builds the release gateway and the load
# example, pins when it can, runs it. Arguments go to the example
# (`--help` lists them); see benches/load/README.md.
#
#   benches/load/run.sh                                   # everything, ~2.5 min after the build
#   benches/load/run.sh --duration 3 --connections 16     # a quick look
#   benches/load/run.sh --workloads small --targets protogate
#
# Environment:
#   PROTOGATE_BIN   the gateway binary; when set, the gateway is not built
#   LOAD_PIN        SERVER:LOAD CPU lists for taskset (default 0:1 when
#                   taskset exists and there are 2 CPUs or more; "none": off)
#   CARGO_TARGET_DIR, CARGO  as for cargo
#
# Why pin: the gateway and the backend share the SERVER CPUs (one thread
# each by default), the load generator has the LOAD CPUs to itself. The
# generator then never takes CPU from the servers, so a row measures what
# one server core delivers, not the contention between load and server; it
# is the split of the shared peer bench, so the figures are comparable.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

cargo=${CARGO:-cargo}
target_dir=${CARGO_TARGET_DIR:-target}
if [[ -n ${PROTOGATE_BIN:-} ]]; then
  "$cargo" build --release --example load
else
  "$cargo" build --release --bin protogate --example load
  export PROTOGATE_BIN=$target_dir/release/protogate
fi

if [[ -z ${LOAD_PIN+set} ]]; then
  LOAD_PIN=none
  if command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then
    LOAD_PIN=0:1
  fi
fi
export LOAD_PIN
if [[ $LOAD_PIN == none ]]; then
  echo "run.sh: not pinned (no taskset or a single CPU): load and servers share the CPUs" >&2
fi

exec "$target_dir/release/examples/load" "$@"
