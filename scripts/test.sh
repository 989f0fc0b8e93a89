#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run) and as a newcomer runs it on a fresh Debian
# machine: install the test tools, check format and lints (clippy, -D warnings), then every
# unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
# Lints and format are part of the suite (the [lints] table in Cargo.toml says which).
if command -v rustup >/dev/null 2>&1; then
    rustup component add clippy rustfmt >/dev/null 2>&1 || true
fi
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets
