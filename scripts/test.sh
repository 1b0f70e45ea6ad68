#!/usr/bin/env bash
# The test command: servers, formatting, lints, and every test (unit, integration, doctests).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/services.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets
cargo test --workspace --doc
