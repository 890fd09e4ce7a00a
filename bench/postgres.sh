#!/usr/bin/env bash
# pgbench through Portcullis vs a direct connection vs PgBouncer (session mode) vs HAProxy
# (TCP mode), interleaved in one run, medians of ROUNDS runs each. Policy and audit are on in
# the gateway.
#
#   bench/postgres.sh            # ROUNDS=3 DURATION=10 CLIENTS=8 THREADS=2 SCALE=10
#
# Prints TPS per mode and target, the ratios gateway/direct, pgbouncer/direct,
# haproxy/pgbouncer and gateway/pgbouncer, and each proxy's own CPU time per transaction.
# Modes: -S with prepared and simple protocol and the TPC-B-like script with CLIENTS clients,
# and -S prepared with one client (its TPS is one over a statement's latency). HAProxy relays
# bytes and parses nothing at all: it shows what relaying alone costs on this machine, the
# floor under any proxy here.
set -euo pipefail
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; CLIENTS=${CLIENTS:-8}; THREADS=${THREADS:-2}; SCALE=${SCALE:-10}
source "$(dirname "$0")/lib.sh"
bench_init portcullis-bench
pw="bench-$RANDOM$RANDOM"
pg_port=$base_port; bouncer_port=$((base_port + 1)); gw_port=$((base_port + 2)); haproxy_port=$((base_port + 3))
cleanup() {
  stop_gateway
  [ -f "$work/bouncer/pgbouncer.pid" ] && kill "$(cat "$work/bouncer/pgbouncer.pid")" 2>/dev/null || true
  [ -f "$work/haproxy.pid" ] && kill "$(cat "$work/haproxy.pid")" 2>/dev/null || true
  bash tests/scripts/pg.sh stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT
PG_APP_PASSWORD="$pw" bash tests/scripts/pg.sh start "$work/pg" "$pg_port"
PGPASSWORD="$pw" pgbench -q -i -s "$SCALE" -h 127.0.0.1 -p "$pg_port" -U app orders >/dev/null 2>&1

# PgBouncer in session mode: parses nothing, the usual thing to put in this place.
mkdir -p "$work/bouncer"
cat > "$work/bouncer/pgbouncer.ini" <<INI
[databases]
orders = host=127.0.0.1 port=$pg_port dbname=orders user=app password=$pw
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
auth_type = trust
auth_file = $work/bouncer/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
pidfile = $work/bouncer/pgbouncer.pid
logfile = $work/bouncer/pgbouncer.log
unix_socket_dir =
INI
echo '"app" ""' > "$work/bouncer/userlist.txt"
if [ "$(id -u)" = 0 ]; then chown -R postgres "$work/bouncer"; runuser -u postgres -- pgbouncer -d "$work/bouncer/pgbouncer.ini"; else pgbouncer -d "$work/bouncer/pgbouncer.ini"; fi

# HAProxy in TCP mode: relays bytes without reading the protocol.
cat > "$work/haproxy.cfg" <<CFG
global
  maxconn 200
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen orders
  bind 127.0.0.1:$haproxy_port
  server pg 127.0.0.1:$pg_port
CFG
haproxy -f "$work/haproxy.cfg" -D -p "$work/haproxy.pid"

# The gateway: built-in issuer, policy that decides every statement, audit on.
cat > "$work/gw/policy.cedar" <<'CEDAR'
@id("bench-connect")
permit(principal in Group::"bench", action == Action::"connect", resource);
@id("bench-sql")
permit(principal in Group::"bench", action in [Action::"sql.read", Action::"sql.write", Action::"sql.session"], resource)
when { !context.unbounded };
@id("no-ddl")
@reason("schema changes go through migrations")
forbid(principal, action == Action::"sql.ddl", resource);
CEDAR
printf '%s' "$pw" > "$work/gw/pw"
{ gateway_config; cat <<TOML
[[listeners]]
protocol = "postgres"
listen = "127.0.0.1:$gw_port"
[[connections]]
name = "orders"
protocol = "postgres"
target = "127.0.0.1:$pg_port"
database = "orders"
user = "app"
password_file = "pw"
TOML
} > "$work/gw/portcullis.toml"
start_gateway
token=$(issue_token --sub bench --group bench)

for _ in $(seq 50); do [ -s "$work/haproxy.pid" ] && [ -s "$work/bouncer/pgbouncer.pid" ] && break; sleep 0.1; done
declare -A pid=([pgbouncer]=$(cat "$work/bouncer/pgbouncer.pid") [haproxy]=$(cat "$work/haproxy.pid") [gateway]=$gw_pid)
# CPU time (user + system, in clock ticks) of a proxy process, all its threads.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)

run() { # target mode -> "tps cpu-us-per-transaction"
  local target=$1 mode=$2 port user pass args c0=0 c1=0 tps
  case $target in
    direct) port=$pg_port; user=app; pass=$pw ;;
    pgbouncer) port=$bouncer_port; user=app; pass="" ;;
    haproxy) port=$haproxy_port; user=app; pass=$pw ;;
    gateway) port=$gw_port; user=bench; pass=$token ;;
  esac
  case $mode in
    select-prepared) args=(-S -M prepared -c "$CLIENTS" -j "$THREADS") ;;
    select-simple) args=(-S -M simple -c "$CLIENTS" -j "$THREADS") ;;
    tpcb-simple) args=(-M simple -c "$CLIENTS" -j "$THREADS") ;;
    # One client: no concurrency to hide behind, so TPS is 1 / the latency of a statement.
    select-1client) args=(-S -M prepared -c 1 -j 1) ;;
  esac
  [ -n "${pid[$target]:-}" ] && c0=$(cpu_ticks "${pid[$target]}")
  tps=$(PGPASSWORD="$pass" pgbench -n "${args[@]}" -T "$DURATION" \
    -h 127.0.0.1 -p "$port" -U "$user" orders 2>"$work/last.err" | awk '/^tps = /{print $3}' | head -1)
  [ -n "$tps" ] || return 0
  [ -n "${pid[$target]:-}" ] && c1=$(cpu_ticks "${pid[$target]}")
  awk -v t="$tps" -v c=$((c1 - c0)) -v hz="$tick" -v d="$DURATION" 'BEGIN{printf "%s %.1f\n", t, c / hz / (t * d) * 1e6}'
}

declare -A tps cpu
targets=(direct pgbouncer haproxy gateway)
modes=(select-prepared select-simple tpcb-simple select-1client)
for round in $(seq "$ROUNDS"); do
  for mode in "${modes[@]}"; do
    # Rotate the order each round so no target always runs first or last.
    for i in 0 1 2 3; do
      t=${targets[$(((i + round) % 4))]}
      out=$(run "$t" "$mode")
      [ -n "$out" ] || { echo "pgbench failed for $t $mode:" >&2; cat "$work/last.err" >&2; exit 1; }
      read -r v c <<<"$out"
      tps[$mode,$t]="${tps[$mode,$t]:-} $v"
      cpu[$mode,$t]="${cpu[$mode,$t]:-} $c"
      printf 'round %d %-16s %-10s %10.0f tps %8.1f us cpu/tx\n' "$round" "$mode" "$t" "$v" "$c" >&2
    done
  done
done

echo
echo "pgbench -c $CLIENTS -j $THREADS (select-1client: -c 1 -j 1) -T $DURATION, scale $SCALE, median of $ROUNDS interleaved rounds"
printf '%-16s %9s %9s %9s %9s %9s %9s %9s %9s\n' "tps" direct pgbouncer haproxy gateway gw/direct pgb/direct hap/pgb gw/pgb
for mode in "${modes[@]}"; do
  d=$(echo "${tps[$mode,direct]}" | median); b=$(echo "${tps[$mode,pgbouncer]}" | median)
  h=$(echo "${tps[$mode,haproxy]}" | median); g=$(echo "${tps[$mode,gateway]}" | median)
  awk -v m="$mode" -v d="$d" -v b="$b" -v h="$h" -v g="$g" \
    'BEGIN{printf "%-16s %9.0f %9.0f %9.0f %9.0f %9.2f %9.2f %9.2f %9.2f\n", m, d, b, h, g, g/d, b/d, h/b, g/b}'
done
echo
echo "proxy CPU per transaction (us, user + system, all threads), median"
printf '%-16s %9s %9s %9s\n' "cpu" pgbouncer haproxy gateway
for mode in "${modes[@]}"; do
  printf '%-16s %9s %9s %9s\n' "$mode" "$(echo "${cpu[$mode,pgbouncer]}" | median)" \
    "$(echo "${cpu[$mode,haproxy]}" | median)" "$(echo "${cpu[$mode,gateway]}" | median)"
done
events=$(curl -fs "http://127.0.0.1:$admin_port/metrics" | awk '/^portcullis_audit_events_total/{print $2}')
echo "gateway audited $events events during the run"

# Where the gateway's CPU goes: one more select-prepared run (not in the medians above) under
# `perf record` with DWARF call graphs; each part is the share of the gateway's samples spent
# inside it (children included), times that run's CPU per transaction. Skipped without perf
# or with SPLIT=0.
if [ "${SPLIT:-1}" != 0 ] && command -v perf >/dev/null 2>&1; then
  c0=$(cpu_ticks "$gw_pid")
  perf record -q -F 299 --call-graph dwarf,16384 -p "$gw_pid" -o "$work/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
  perf_pid=$!
  split_tps=$(PGPASSWORD="$token" pgbench -n -S -M prepared -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
    -h 127.0.0.1 -p "$gw_port" -U bench orders 2>/dev/null | awk '/^tps = /{print $3}' | head -1)
  c1=$(cpu_ticks "$gw_pid")
  wait "$perf_pid" || true
  us=$(awk -v t="$split_tps" -v c=$((c1 - c0)) -v hz="$tick" -v d="$DURATION" 'BEGIN{printf "%.1f", c / hz / (t * d) * 1e6}')
  perf report -i "$work/perf.data" --children --sort symbol -g none --stdio 2>/dev/null > "$work/perf.txt" || true
  echo
  echo "gateway CPU split, select-prepared under perf ($split_tps tps, $us us/tx; the profiler slows it)"
  awk -v us="$us" '
    function share(pat,   m) { m = 0; for (i = 1; i <= n; i++) if (index(sym[i], pat) && pct[i] > m) m = pct[i]; return m }
    /^ +[0-9.]+%/ { n++; pct[n] = $1 + 0; sym[n] = $0 }
    END {
      split("decide (classify, policy, gate)|audit staging (serialise, chain, map)|journal (write, hand-over)|indexing (store)", names, "|")
      part[1] = share("relay::upstream::Upstream::decide ")
      # With durability = "process" staging copies each line into the mapped journal.
      part[2] = share("audit::writer::Shared::stage")
      part[3] = share("audit::writer::Shared::flush") + share("audit::writer::mapped::hand_over_loop")
      part[4] = share("audit::indexer::Indexer::index")
      rest = 100
      for (k = 1; k <= 4; k++) { rest -= part[k]; printf "  %-36s %5.1f%%  %6.1f us/tx\n", names[k], part[k], part[k] * us / 100 }
      printf "  %-36s %5.1f%%  %6.1f us/tx\n", "relay and the rest (syscalls, runtime)", rest, rest * us / 100
    }' "$work/perf.txt"
fi
