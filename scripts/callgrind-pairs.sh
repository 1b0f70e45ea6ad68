#!/usr/bin/env bash
# Counts the client's instructions per acquire + release pair, deterministically: callgrind
# runs `leasehold-bench --pairs N --pairs-of X` (one thread, one key, the local Redis) for a
# small and a large N, and (large - small) / (large - small pairs) cancels start-up and
# connecting. Three repetitions per implementation; prints the median and the spread, and the
# top inclusive costs of leasehold's largest run.
#
#   scripts/callgrind-pairs.sh            # SMALL=200 LARGE=1200 by default
#   SMALL=500 LARGE=3000 scripts/callgrind-pairs.sh
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/services.sh >/dev/null
command -v valgrind >/dev/null 2>&1 || apt_install valgrind
cargo build --release -q -p leasehold-bench
bin=target/release/leasehold-bench
out=target/callgrind
mkdir -p "$out"
small=${SMALL:-200}
large=${LARGE:-1200}

# Instructions of one run: "Collected : N" from callgrind's summary.
instructions() {
  local of=$1 n=$2 file=$3
  valgrind --tool=callgrind --callgrind-out-file="$file" "$bin" \
    --redis-url "$LEASEHOLD_REDIS_URL" --pairs "$n" --pairs-of "$of" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

for of in leasehold fenced-raw; do
  per_pair=()
  for rep in 1 2 3; do
    a=$(instructions "$of" "$small" "$out/$of-small-$rep.out")
    b=$(instructions "$of" "$large" "$out/$of-large-$rep.out")
    per_pair+=($(( (b - a) / (large - small) )))
  done
  sorted=($(printf '%s\n' "${per_pair[@]}" | sort -n))
  echo "$of: ${sorted[1]} instructions per pair (median of 3; spread ${sorted[0]}-${sorted[2]})"
done

echo "== top inclusive costs, leasehold, $large pairs"
callgrind_annotate --inclusive=yes "$out/leasehold-large-1.out" 2>/dev/null | sed -n '1,40p' |
  grep -v '^--' | head -40
