#!/usr/bin/env bash
# The whole test suite: install what it needs, check formatting and lints, then run unit,
# property and end-to-end tests (real PostgreSQL, real OIDC provider, psql and pgbench).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -q -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
