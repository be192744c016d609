#!/usr/bin/env bash
# The long fuzz run: every target of tests/fuzz.rs (the JSONC reader, the
# template loader, durations and sizes, boot_command keys, interpolation,
# checksum lists, the store format and the store's files, and a few mutated
# templates through `imgbuild validate`) in release mode, with overflow
# checks and debug assertions on, under `nice`. See docs/testing.md.
#
#   scripts/fuzz-long.sh                                  # 1.5 million inputs per target, a random seed
#   IMGBUILD_FUZZ_ITERATIONS=100000 scripts/fuzz-long.sh  # shorter
#   IMGBUILD_FUZZ_SEED=1234 scripts/fuzz-long.sh keys     # one target, a seed printed by an earlier run
#
# Arguments go to the test harness (a test name filter). Each target prints
# how many inputs it ran; a finding fails its test with the (minimised) input
# as a Rust literal, also saved under the cargo target directory's
# tmp/fuzz-findings/.
set -euo pipefail
cd "$(dirname "$0")/.."

export IMGBUILD_FUZZ_ITERATIONS="${IMGBUILD_FUZZ_ITERATIONS:-1500000}"
export IMGBUILD_FUZZ_SEED="${IMGBUILD_FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
# Arithmetic overflow and debug assertions are findings too.
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
# Thin LTO only lengthens the build here.
export CARGO_PROFILE_RELEASE_LTO=false
echo "fuzz-long: seed $IMGBUILD_FUZZ_SEED, $IMGBUILD_FUZZ_ITERATIONS inputs per target" >&2
# Without the `aws` feature: the AWS SDK is minutes of release build and no parser.
exec nice -n "${IMGBUILD_FUZZ_NICE:-10}" cargo test --release --locked --no-default-features --test fuzz -- \
    --test-threads="${IMGBUILD_FUZZ_THREADS:-1}" --nocapture "$@"
