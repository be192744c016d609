#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs system packages, builds the
# cached test fixture, then runs every test of the workspace (unit, CLI, fetch,
# SSH, QEMU end to end, S3 and EC2 against moto).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# Built once and cached by content hash outside the clone (IMGBUILD_FIXTURES_DIR).
tests/fixtures/build-base-image.sh >/dev/null

cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-2}"
