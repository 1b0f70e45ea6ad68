#!/usr/bin/env bash
# Makes Redis and PostgreSQL available on loopback for the tests, and exports their URLs:
#   LEASEHOLD_REDIS_URL     (default redis://127.0.0.1:6379)
#   LEASEHOLD_REDIS_CLUSTER_URL (redis+cluster://127.0.0.1:30001,...: 3 primaries + 3 replicas)
#   LEASEHOLD_POSTGRES_URL  (default postgres://postgres@127.0.0.1:5432/postgres)
#   LEASEHOLD_PGBOUNCER_URL (default postgres://postgres@127.0.0.1:6432/postgres: PgBouncer in
#                            transaction pooling in front of that PostgreSQL)
#   LEASEHOLD_ETCD_URL      (default etcd://127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793: a
#                            3-member etcd cluster, heartbeat 50 ms, election timeout 500 ms)
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

# ---- Redis Cluster: 3 primaries + 3 replicas ---------------------------------------------------
# On LEASEHOLD_REDIS_CLUSTER_PORT and the five ports after it (default 30001-30006; each node's
# cluster bus is its port + 10000). No test fails this one over (the failover tests start private
# clusters with a 1 s node timeout), so a node timeout of 5 s: a node starved on a loaded machine
# is not failed over under the other tests.
cluster_base="${LEASEHOLD_REDIS_CLUSTER_PORT:-30001}"
cluster_ports=$(seq "$cluster_base" $((cluster_base + 5)))

cluster_ready() { # every node: state ok, and every replica's link to its primary up
  local port
  for port in $cluster_ports; do
    redis-cli -p "$port" -h 127.0.0.1 cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
    if redis-cli -p "$port" -h 127.0.0.1 info replication 2>/dev/null | grep -q '^role:slave'; then
      redis-cli -p "$port" -h 127.0.0.1 info replication | grep -q '^master_link_status:up' || return 1
    fi
  done
  # 3 primaries with slots and 3 replicas.
  [ "$(redis-cli -p "$cluster_base" -h 127.0.0.1 cluster nodes 2>/dev/null | grep -c 'master.* connected [0-9]')" = 3 ] &&
    [ "$(redis-cli -p "$cluster_base" -h 127.0.0.1 cluster nodes 2>/dev/null | grep -c 'slave')" = 3 ]
}

if ! cluster_ready; then
  command -v redis-cli >/dev/null 2>&1 || apt_install redis-server redis-tools
  cdir="$services_dir/redis-cluster"
  for port in $cluster_ports; do
    if redis-cli -p "$port" -h 127.0.0.1 ping >/dev/null 2>&1 || (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      log "port $port is taken by something that is not a ready Redis Cluster node: stop it, or set"
      log "LEASEHOLD_REDIS_CLUSTER_PORT to the first of six free ports"
      exit 1
    fi
  done
  rm -rf "$cdir"
  log "starting a Redis Cluster (3 primaries, 3 replicas) on 127.0.0.1:$cluster_base-$((cluster_base + 5))"
  nodes=()
  for port in $cluster_ports; do
    mkdir -p "$cdir/$port"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
      --cluster-enabled yes --cluster-node-timeout 5000 --cluster-config-file "$cdir/$port/nodes.conf" \
      --dir "$cdir/$port" --logfile "$cdir/$port/redis.log" --pidfile "$cdir/$port/redis.pid"
    nodes+=("127.0.0.1:$port")
  done
  for port in $cluster_ports; do
    for _ in $(seq 50); do redis-cli -p "$port" -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$cdir/create.log" 2>&1 ||
    { log "redis-cli --cluster create failed: see $cdir/create.log"; exit 1; }
  for _ in $(seq 300); do cluster_ready && break; sleep 0.1; done
  cluster_ready || { log "the Redis Cluster did not become ready in 30 s: see $cdir/*/redis.log"; exit 1; }
fi
cluster_url="redis+cluster://$(for port in $cluster_ports; do printf '127.0.0.1:%s,' "$port"; done | sed 's/,$//')"

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

# ---- PgBouncer (transaction pooling) in front of PostgreSQL --------------------------------------
bouncer_url="${LEASEHOLD_PGBOUNCER_URL:-postgres://postgres@127.0.0.1:6432/postgres}"
bouncer_port=$(port_of "$bouncer_url" 6432)

bouncer_answers() {
  psql "$bouncer_url" -XtAc 'select 1' >/dev/null 2>&1
}

if ! bouncer_answers; then
  command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || apt_install pgbouncer
  bouncer_bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
  bdir="$services_dir/pgbouncer"
  mkdir -p "$bdir"
  printf '"postgres" ""\n' > "$bdir/userlist.txt"
  cat > "$bdir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$pg_port
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $bdir/userlist.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
server_idle_timeout = 5
ignore_startup_parameters = extra_float_digits
logfile = $bdir/pgbouncer.log
pidfile = $bdir/pgbouncer.pid
INI
  log "starting PgBouncer (transaction pooling) on 127.0.0.1:$bouncer_port"
  if [ "$(id -u)" -eq 0 ]; then
    # PgBouncer refuses to run as root.
    chown -R postgres: "$bdir"
    runuser -u postgres -- "$bouncer_bin" -d "$bdir/pgbouncer.ini" >/dev/null
  else
    "$bouncer_bin" -d "$bdir/pgbouncer.ini" >/dev/null
  fi
  for _ in $(seq 50); do bouncer_answers && break; sleep 0.1; done
  bouncer_answers || { log "PgBouncer did not start: see $bdir/pgbouncer.log"; exit 1; }
fi

# ---- etcd: a 3-member cluster from Debian's etcd-server, and protoc for etcd-client's build ----
# Short timings (heartbeat 50 ms, election timeout 500 ms) give a 1 s minimum lease, so the
# conformance suite's expiry cases stay short.
command -v protoc >/dev/null 2>&1 && [ -e /usr/include/google/protobuf/descriptor.proto ] ||
  apt_install protobuf-compiler libprotobuf-dev
etcd_url="${LEASEHOLD_ETCD_URL:-etcd://127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793}"
etcd_endpoints=${etcd_url#*://}
etcd_answers() {
  command -v etcdctl >/dev/null 2>&1 &&
    ETCDCTL_API=3 etcdctl --endpoints="$etcd_endpoints" --command-timeout=2s endpoint health >/dev/null 2>&1
}
if ! etcd_answers; then
  { command -v etcd && command -v etcdctl; } >/dev/null 2>&1 || apt_install etcd-server etcd-client
  edir="$services_dir/etcd"
  # Members an earlier run started and left behind (a partial cluster): stop them, and wait
  # until their ports are free, before starting afresh.
  for pidfile in "$edir"/n*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && grep -q etcd "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$edir"; mkdir -p "$edir"
  log "starting a 3-member etcd cluster on 127.0.0.1:23791-23793 (peers 23801-23803)"
  initial="n1=http://127.0.0.1:23801,n2=http://127.0.0.1:23802,n3=http://127.0.0.1:23803"
  for i in 1 2 3; do
    # The member writes its own pid (setsid forks when started from a shell with job
    # control, so `$!` would be setsid's), then becomes etcd in a session of its own.
    setsid sh -c 'echo $$ >"$0"; exec "$@"' "$edir/n$i.pid" etcd --name "n$i" --data-dir "$edir/n$i" \
      --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
      --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
      --initial-cluster-token leasehold-services --initial-cluster "$initial" --initial-cluster-state new \
      --heartbeat-interval 50 --election-timeout 500 --logger zap --log-outputs "$edir/n$i.log" \
      </dev/null >/dev/null 2>&1 &
  done
  for _ in $(seq 300); do
    etcd_answers && break
    for i in 1 2 3; do
      pid=$(cat "$edir/n$i.pid" 2>/dev/null || true)
      [ -z "$pid" ] || [ -e "/proc/$pid" ] ||
        { log "etcd member n$i exited (a port in use?): see $edir/n$i.log"; exit 1; }
    done
    sleep 0.1
  done
  etcd_answers || { log "the etcd cluster did not become healthy in 30 s: see $edir/n*.log"; exit 1; }
fi

# Tools the tests use besides the servers: openssl (certificates for the TLS tests), pgrep
# (lockcheck pauses a private PostgreSQL cluster's processes), faketime (SQLite and PostgreSQL
# under a stepped wall clock).
command -v openssl >/dev/null 2>&1 || apt_install openssl
command -v pgrep >/dev/null 2>&1 || apt_install procps
command -v faketime >/dev/null 2>&1 || apt_install faketime

export LEASEHOLD_PGBOUNCER_URL="$bouncer_url"
export LEASEHOLD_REDIS_URL="$redis_url"
export LEASEHOLD_REDIS_CLUSTER_URL="$cluster_url"
export LEASEHOLD_POSTGRES_URL="$pg_url"
export LEASEHOLD_ETCD_URL="$etcd_url"
log "etcd at $LEASEHOLD_ETCD_URL"
log "redis at $LEASEHOLD_REDIS_URL, redis cluster at $LEASEHOLD_REDIS_CLUSTER_URL, postgres at $LEASEHOLD_POSTGRES_URL, pgbouncer at $LEASEHOLD_PGBOUNCER_URL"
