#!/usr/bin/env bash
# The test command: servers, formatting, lints, and every test (unit, integration, doctests).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/services.sh

echo "== toolchain: rust-version is what this run proves"
declared=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
actual=$("${RUSTC:-rustc}" -vV | sed -n 's/^release: //p')
case "$actual" in
  "$declared" | "$declared".*) ;;
  *)
    echo "rustc $actual, but Cargo.toml declares rust-version $declared: run with that toolchain" >&2
    echo "(rustup toolchain install $declared), or raise rust-version to the one CI tests" >&2
    exit 1 ;;
esac

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo doc, warnings denied"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== every feature set a user can pick builds (leasehold-redis: with and without tls)"
cargo clippy -p leasehold-redis --no-default-features --all-targets --quiet -- -D warnings
cargo clippy -p leasehold-redis --all-features --all-targets --quiet -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets 2>&1 | tee -a "$log"
cargo test --workspace --doc 2>&1 | tee -a "$log"
# leasehold-redis without tls: `rediss://` is refused clearly.
cargo test -p leasehold-redis --no-default-features --test no_tls --quiet 2>&1 | tee -a "$log"

echo "== lockcheck: short fixed-seed runs under faults, and the negative controls"
cargo build -q -p leasehold-tests --bin lockcheck
checks=0
for backend in sqlite redis redis-cluster postgres postgres-advisory etcd; do
  target/debug/lockcheck --backend "$backend" --duration 10s --seed 7
  checks=$((checks + 1))
done
# The same with read/write locks (readers and writers, worker faults).
for backend in sqlite redis redis-cluster postgres postgres-advisory; do
  target/debug/lockcheck --backend "$backend" --rw --duration 10s --seed 7
  checks=$((checks + 1))
done
# Every fault kind (one round each) against private servers behind the harness's proxy.
for backend in redis postgres postgres-advisory; do
  target/debug/lockcheck --backend "$backend" --faults all --duration 40s --seed 7
  checks=$((checks + 1))
done
# A private 3-member etcd cluster: the leader killed and paused past the election timeout, a
# follower restarted, beside the worker faults.
target/debug/lockcheck --backend etcd --faults all --duration 40s --seed 7
checks=$((checks + 1))
# A private Redis Cluster: primaries killed (restarted as replicas) and paused past the node
# timeout, every node's connections killed, beside the worker faults. Locks a failover loses
# (asynchronous replication) are counted apart from violations; fences must still rise.
target/debug/lockcheck --backend redis-cluster --faults all --duration 40s --seed 7
checks=$((checks + 1))
# Broken backends must be caught; one key, a 300 ms ttl and 20 s give 10-45 overlaps (150+ for
# get-then-set), so a miss means a blind checker, not bad luck.
for broken in extend-blind release-any; do
  target/debug/lockcheck --backend sqlite --broken "$broken" --keys 1 --ttl 300ms --duration 20s --seed 7
  checks=$((checks + 1))
done
# On the cluster, under its own faults, primary failovers included: a failover excuses only
# the overlaps on its own shard's keys. 30 s, since the failovers take much of the run (in 20 s:
# 11, 9 and 4 overlaps caught in three runs).
target/debug/lockcheck --backend redis-cluster --broken extend-blind \
  --faults pause,kill,cluster-conn-kill,primary-kill,primary-pause \
  --keys 1 --ttl 300ms --duration 30s --seed 7
checks=$((checks + 1))
# etcd rounds a 300 ms ttl up to its 1 s minimum lease, so a flawed extend or release would
# overlap no hold there: a 1 s ttl (holds up to 1.5 s). A blind extend overlaps rarely on one
# key (3-5 per 30-90 s), so four keys for 60 s (10 overlaps measured); a release of whoever
# holds, on one key for 30 s, gave 17.
target/debug/lockcheck --backend etcd --broken extend-blind --keys 4 --ttl 1s --duration 60s --seed 7
checks=$((checks + 1))
target/debug/lockcheck --backend etcd --broken release-any --keys 1 --ttl 1s --duration 30s --seed 7
checks=$((checks + 1))
target/debug/lockcheck --backend sqlite --rw --broken writes-shared --keys 1 --ttl 300ms --duration 20s --seed 7
checks=$((checks + 1))
target/debug/lockcheck --backend sqlite --rw --broken reads-apart --resource unfenced --keys 1 --ttl 300ms --duration 20s --seed 7
checks=$((checks + 1))
target/debug/lockcheck --backend redis --broken get-then-set --keys 1 --ttl 300ms --duration 20s --seed 7
checks=$((checks + 1))
# Fences that restart at 1 when the store loses its data: 8 wipes and rollbacks in 20 s give
# dozens of repeated fences (64 and 13 measured).
target/debug/lockcheck --backend redis --broken fences-restart-at-1 --faults store-wipe,store-rollback \
  --keys 1 --ttl 300ms --duration 20s --seed 7
checks=$((checks + 1))

echo "== docs as docs.rs builds them (--cfg docsrs: doc_cfg; a target dir of its own)"
RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS="--cfg docsrs -D warnings" CARGO_TARGET_DIR=target/docsrs \
  cargo doc --workspace --no-deps --all-features --quiet

# Every step above stops the script on failure, so reaching here means all passed.
passed=$(awk '/^test result:/ { sum += $4 } END { print sum + 0 }' "$log")
echo "summary: $((passed + checks)) passed, 0 failed"
