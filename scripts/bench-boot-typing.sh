#!/usr/bin/env bash
# Reliability of boot_command typing under load: runs the test
# boot_command_types_every_printable_character_under_cpu_load (tests/iso_e2e.rs)
# N times in a row, one installer build per run, each with a busy loop on
# every core. Every run types all printable ASCII at the installer ISO's boot
# prompt and checks the installed system's copy of /proc/cmdline byte for
# byte. Prints each run's result and time, then `PASSED/N`; exit 0 only if
# every run passed. Logs of failed runs are kept (their path is printed).
#
#   scripts/bench-boot-typing.sh [N]      # N defaults to 20 (~2 min a run under TCG)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [RUNS]" >&2; exit 2; }
export IMGBUILD_FIXTURES_DIR=${IMGBUILD_FIXTURES_DIR:-/var/cache/imgbuild-fixtures}
test_name=boot_command_types_every_printable_character_under_cpu_load

logs=$(mktemp -d "${TMPDIR:-/tmp}/bench-boot-typing.XXXXXX")
passed=0
finish() { ((passed == runs)) && rm -rf "$logs"; }
trap finish EXIT
trap 'exit 130' INT TERM

cargo test --locked --test iso_e2e --no-run -q
for ((i = 1; i <= runs; i++)); do
    start=$SECONDS
    if IMGBUILD_TYPING_RUNS=1 cargo test --locked -q --test iso_e2e -- --exact "$test_name" \
        >"$logs/run-$i.log" 2>&1; then
        passed=$((passed + 1))
        echo "run $i: pass ($((SECONDS - start)) s)"
    else
        echo "run $i: FAIL ($((SECONDS - start)) s), log: $logs/run-$i.log"
    fi
done
echo "$passed/$runs"
((passed == runs))
