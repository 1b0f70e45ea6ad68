# Recipes for working on leasehold. `just --list` shows them.

# Everything CI runs: servers, fmt, clippy, all tests.
test:
    scripts/test.sh

# Lints only.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt --all

# API docs for the workspace.
docs:
    cargo doc --workspace --no-deps

# Benchmarks against the servers (see docs/benchmarks.md).
bench:
    . scripts/services.sh && cargo run --release -p leasehold-bench

# The contention example.
example:
    cargo run -p leasehold --example contention

# Redis and PostgreSQL in Docker, for machines that have it.
up:
    docker compose up -d --wait

down:
    docker compose down
