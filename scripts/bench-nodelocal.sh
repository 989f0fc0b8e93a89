#!/usr/bin/env bash
# Node-local mode's numbers, on the release build (as root: network namespaces):
# - 20 rolling-update handovers under 1,000 queries a second: lost and late answers;
# - kill -9 with the kubelet's restart, with and without `fail_open`: the gap;
# - RSS with a full cache of 10,000 entries, checked against 20 MiB.
# The scenarios are the integration tests of tests/it/nodelocal.rs, run against
# target/release/clusterdns with more handovers (NODELOCAL_UPGRADES, default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo build --release --locked --bin clusterdns
export CLUSTERDNS_BIN="$PWD/target/release/clusterdns"
export NODELOCAL_UPGRADES="${NODELOCAL_UPGRADES:-20}"
export NODELOCAL_RSS_LIMIT_MIB="${NODELOCAL_RSS_LIMIT_MIB:-20}"
cargo test --locked --test it nodelocal:: -- --nocapture --test-threads 1 2>&1 \
  | grep -E '^node-local|^test |^test result'
