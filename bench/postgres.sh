#!/usr/bin/env bash
# pgbench through Portcullis vs a direct connection vs PgBouncer (session mode), interleaved
# in one run, medians of ROUNDS runs each. Policy and audit are on in the gateway.
#
#   bench/postgres.sh            # ROUNDS=3 DURATION=10 CLIENTS=8 THREADS=2 SCALE=10
#
# Prints TPS per mode and target and the ratios gateway/direct, pgbouncer/direct and
# gateway/pgbouncer.
set -euo pipefail
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; CLIENTS=${CLIENTS:-8}; THREADS=${THREADS:-2}; SCALE=${SCALE:-10}
source "$(dirname "$0")/lib.sh"
bench_init portcullis-bench
pw="bench-$RANDOM$RANDOM"
pg_port=$base_port; bouncer_port=$((base_port + 1)); gw_port=$((base_port + 2))
cleanup() {
  stop_gateway
  [ -f "$work/bouncer/pgbouncer.pid" ] && kill "$(cat "$work/bouncer/pgbouncer.pid")" 2>/dev/null || true
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

run() { # target mode -> tps
  local target=$1 mode=$2 port user pass args
  case $target in
    direct) port=$pg_port; user=app; pass=$pw ;;
    pgbouncer) port=$bouncer_port; user=app; pass="" ;;
    gateway) port=$gw_port; user=bench; pass=$token ;;
  esac
  case $mode in
    select-prepared) args=(-S -M prepared) ;;
    select-simple) args=(-S -M simple) ;;
    tpcb-simple) args=(-M simple) ;;
  esac
  PGPASSWORD="$pass" pgbench -n "${args[@]}" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
    -h 127.0.0.1 -p "$port" -U "$user" orders 2>"$work/last.err" | awk '/^tps = /{print $3}' | head -1
}

declare -A tps
targets=(direct pgbouncer gateway)
modes=(select-prepared select-simple tpcb-simple)
for round in $(seq "$ROUNDS"); do
  for mode in "${modes[@]}"; do
    # Rotate the order each round so no target always runs first or last.
    for i in 0 1 2; do
      t=${targets[$(((i + round) % 3))]}
      v=$(run "$t" "$mode")
      [ -n "$v" ] || { echo "pgbench failed for $t $mode:" >&2; cat "$work/last.err" >&2; exit 1; }
      tps[$mode,$t]="${tps[$mode,$t]:-} $v"
      printf 'round %d %-16s %-10s %10.0f tps\n' "$round" "$mode" "$t" "$v" >&2
    done
  done
done

echo
echo "pgbench -c $CLIENTS -j $THREADS -T $DURATION, scale $SCALE, median of $ROUNDS interleaved rounds"
printf '%-16s %10s %10s %10s %10s %10s %10s\n' mode direct pgbouncer gateway gw/direct pgb/direct gw/pgb
for mode in "${modes[@]}"; do
  d=$(echo "${tps[$mode,direct]}" | median); b=$(echo "${tps[$mode,pgbouncer]}" | median); g=$(echo "${tps[$mode,gateway]}" | median)
  awk -v m="$mode" -v d="$d" -v b="$b" -v g="$g" 'BEGIN{printf "%-16s %10.0f %10.0f %10.0f %10.2f %10.2f %10.2f\n", m, d, b, g, g/d, b/d, g/b}'
done
events=$(curl -fs "http://127.0.0.1:$admin_port/metrics" | awk '/^portcullis_audit_events_total/{print $2}')
echo "gateway audited $events events during the run"
