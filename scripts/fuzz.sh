#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (see docs/fuzzing.md), each for a bounded
# time, and fails if any of them crashes.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Default: 60 s for each target, all targets. Builds once, then for each
# target: replays its committed regression inputs, seeds the working corpus
# (fuzz/corpus/<target>, not committed) from fuzz/seeds/<target>, and fuzzes
# with libFuzzer under `nice`. Prints each target's executions, coverage
# (cov: edges, ft: features) and corpus size from libFuzzer's last line.
#
# Environment:
#   FUZZ_SANITIZER  address (default) or none
#   FUZZ_NICE       niceness of the fuzzer processes (default 10)
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang (default 10)
#
# cargo-fuzz needs nightly-only compiler flags (-Z sanitizer, coverage
# instrumentation): RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
sanitizer=${FUZZ_SANITIZER:-address}
niceness=${FUZZ_NICE:-10}
timeout=${FUZZ_TIMEOUT:-10}
all_targets=(template percent query json_request json_response config jwt)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [seconds-per-target] [target...]   (targets: ${all_targets[*]})" >&2
    exit 2
fi
for t in "${targets[@]}"; do
    [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "unknown target: $t (targets: ${all_targets[*]})" >&2; exit 2; }
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
triple=$(rustc -vV | sed -n 's/^host: //p')
echo "building the fuzz targets (sanitizer: $sanitizer)"
if [ ${#targets[@]} -eq 1 ]; then
    cargo fuzz build --sanitizer "$sanitizer" "${targets[0]}"
else
    cargo fuzz build --sanitizer "$sanitizer"
fi
bin_dir=fuzz/target/$triple/release

failed=()
summary=()
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    artifacts=fuzz/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    dict=()
    case $t in
        json_request | json_response) dict=(-dict=fuzz/dicts/json.dict) ;;
        query) dict=(-dict=fuzz/dicts/query.dict) ;;
        template) dict=(-dict=fuzz/dicts/template.dict) ;;
        config) dict=(-dict=fuzz/dicts/config.dict) ;;
    esac

    # Inputs that crashed once must keep passing.
    regressions=(fuzz/regressions/"$t"/*)
    if [ -e "${regressions[0]}" ]; then
        echo "== $t: replaying ${#regressions[@]} regression input(s)"
        if ! "$bin_dir/$t" -timeout="$timeout" "${regressions[@]}" >"$artifacts/regressions.log" 2>&1; then
            echo "$t: a regression input fails again; see $artifacts/regressions.log" >&2
            failed+=("$t (regression)")
            continue
        fi
    fi

    echo "== $t: fuzzing for ${seconds}s"
    log=$artifacts/fuzz.log
    status=0
    nice -n "$niceness" "$bin_dir/$t" "$corpus" "${dict[@]}" \
        -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=4096 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n1 || true)
    if [ "$status" -ne 0 ] || [ -z "$done_line" ]; then
        echo "$t: CRASHED (exit $status); input and log in $artifacts/" >&2
        grep -E '^(==[0-9]+==|thread .* panicked|SUMMARY|artifact_prefix|Test unit written)' "$log" | head -n 20 >&2 || true
        failed+=("$t")
        summary+=("$(printf '%-14s crashed (exit %s)' "$t" "$status")")
        continue
    fi
    # "#123456 DONE   cov: 1234 ft: 5678 corp: 321/45Kb ..."
    execs=$(sed -E 's/^#([0-9]+).*/\1/' <<<"$done_line")
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$done_line")
    corp=$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$done_line")
    summary+=("$(printf '%-14s execs %-10s cov %-6s ft %-7s corpus %s' "$t" "$execs" "$cov" "$ft" "$corp")")
done

echo
echo "== results (${seconds}s per target, sanitizer $sanitizer)"
for line in "${summary[@]}"; do echo "$line"; done
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "no crashes"
