# Recipes for working on leasehold. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

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

# Instructions per Redis acquire + release pair, leasehold against the fenced floor (callgrind).
callgrind:
    scripts/callgrind-pairs.sh

# The safety harness: a fixed-seed run per backend (what CI runs).
lockcheck duration="10s" seed="7":
    . scripts/services.sh && for b in sqlite redis postgres postgres-advisory; do cargo run -q -p leasehold-tests --bin lockcheck -- --backend $b --duration {{duration}} --seed {{seed}}; done

# A long soak of one backend under faults (faults="all" adds the server and network faults on
# a private server behind a proxy, for redis and postgres).
soak backend="redis" duration="5m" seed="7" faults="pause,kill":
    . scripts/services.sh && cargo run -q --release -p leasehold-tests --bin lockcheck -- --backend {{backend}} --duration {{duration}} --seed {{seed}} --faults {{faults}}

# The contention example.
example:
    cargo run -p leasehold --example contention

# Redis and PostgreSQL in Docker, for machines that have it.
up:
    docker compose up -d --wait

down:
    docker compose down
