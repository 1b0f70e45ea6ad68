#!/usr/bin/env bash
# Makes Redis and PostgreSQL available on loopback for the tests, and exports their URLs:
#   LEASEHOLD_REDIS_URL     (default redis://127.0.0.1:6379)
#   LEASEHOLD_POSTGRES_URL  (default postgres://postgres@127.0.0.1:5432/postgres)
# A server that already answers at the URL is used as it is. Otherwise the script installs the
# Debian package if the binary is missing (apt-get, as root) and starts a private server under
# $LEASEHOLD_SERVICES_DIR (default /tmp/leasehold-services). Idempotent: a second run finds the
# servers up and returns at once.
#
# Source it (`. scripts/services.sh`) to get the exports, or run it to just start the servers.

set -euo pipefail

services_dir="${LEASEHOLD_SERVICES_DIR:-/tmp/leasehold-services}"
mkdir -p "$services_dir"

log() { printf 'services: %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    log "need root to apt-get install $*; install them yourself and run again"
    return 1
  fi
  if [ "$apt_updated" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  # Debian's service scripts must not try to start servers inside a container.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "$@" >&2
}

port_of() { # URL -> port
  local hostport=${1#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}
  case "$hostport" in *:*) echo "${hostport##*:}" ;; *) echo "$2" ;; esac
}

# ---- Redis ------------------------------------------------------------------------------------
redis_url="${LEASEHOLD_REDIS_URL:-redis://127.0.0.1:6379}"
redis_port=$(port_of "$redis_url" 6379)

redis_answers() {
  command -v redis-cli >/dev/null 2>&1 && [ "$(redis-cli -p "$redis_port" -h 127.0.0.1 ping 2>/dev/null)" = PONG ]
}

if ! redis_answers; then
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server redis-tools
  log "starting redis-server on 127.0.0.1:$redis_port"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --dir "$services_dir" --logfile "$services_dir/redis.log" --pidfile "$services_dir/redis.pid"
  for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
  redis_answers || { log "redis did not start: see $services_dir/redis.log"; exit 1; }
fi

# ---- PostgreSQL -------------------------------------------------------------------------------
pg_url="${LEASEHOLD_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_port=$(port_of "$pg_url" 5432)

pg_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }; done
  return 1
}

pg_answers() {
  command -v psql >/dev/null 2>&1 && psql "$pg_url" -XtAc 'select 1' >/dev/null 2>&1
}

if ! pg_answers; then
  pg_bin >/dev/null || apt_install postgresql postgresql-client
  bin=$(pg_bin)
  data="$services_dir/pg"
  if (exec 3<>"/dev/tcp/127.0.0.1/$pg_port") 2>/dev/null; then
    # Something else (a system cluster without trust auth) holds the port: use our own port.
    pg_port=55432
    pg_url="postgres://postgres@127.0.0.1:$pg_port/postgres"
  fi
  if ! pg_answers; then
    # initdb refuses to run as root: the cluster belongs to the postgres user.
    run_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$services_dir"; fi
    if [ ! -f "$data/PG_VERSION" ]; then
      log "creating a private PostgreSQL cluster in $data"
      run_pg "$bin/initdb" -D "$data" -U postgres -A trust --no-sync >/dev/null
    fi
    log "starting PostgreSQL on 127.0.0.1:$pg_port"
    run_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -o \
      "-c listen_addresses=127.0.0.1 -p $pg_port -k $data -c max_connections=300 -c fsync=off" start >/dev/null
    pg_answers || { log "PostgreSQL did not start: see $data/server.log"; exit 1; }
  fi
fi

export LEASEHOLD_REDIS_URL="$redis_url"
export LEASEHOLD_POSTGRES_URL="$pg_url"
log "redis at $LEASEHOLD_REDIS_URL, postgres at $LEASEHOLD_POSTGRES_URL"
