#!/usr/bin/env bash
# A SQL Server client through Portcullis' TDS gateway vs straight to the target, interleaved
# in one run, medians of ROUNDS runs each.
#
#   bench/tds.sh            # ROUNDS=5 ROWS=100000 BATCHES=2000
#
# No SQL Server runs on these machines. The target is tds-testserver (crates/tds-testserver),
# a stand-in that speaks TDS 7.4 and answers every batch from PostgreSQL, so the figures are
# the gateway's cost on real TDS traffic, not SQL Server's speed. The client is FreeTDS tsql
# (C; python-tds decodes rows in Python, which would hide the proxy's cost behind its own).
# Every leg is in the clear on loopback. Targets:
#   direct   tsql -> tds-testserver
#   gateway  tsql -> portcullis -> tds-testserver: policy and audit on, no masking
#   masked   the same through a connection with masking: a column rule on bench_rows.note and
#            the e-mail and card detectors, so every row is rewritten
# Modes:
#   select   one SELECT of ROWS rows (int, nvarchar(40), nvarchar(100) e-mail, nvarchar(max),
#            numeric(12,2), datetime2), read whole (tsql prints to /dev/null)
#   batches  BATCHES small batches one after another in one session (a primary-key lookup
#            each, different literals)
# Prints seconds per mode and target, each target's ratio to direct, and the gateway's CPU
# time per run.
set -euo pipefail
ROUNDS=${ROUNDS:-5}; ROWS=${ROWS:-100000}; BATCHES=${BATCHES:-2000}
source "$(dirname "$0")/lib.sh"
bench_init portcullis-tds-bench
cargo build -q --release -p tds-testserver
server_bin="${CARGO_TARGET_DIR:-$root/target}/release/tds-testserver"
pw="bench-$RANDOM$RANDOM"
pg_port=$base_port; tds_port=$((base_port + 1)); gw_port=$((base_port + 2))
cleanup() {
  stop_gateway
  [ -n "${tds_pid:-}" ] && kill "$tds_pid" 2>/dev/null || true
  bash tests/scripts/pg.sh stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT
PG_APP_PASSWORD="$pw" bash tests/scripts/pg.sh start "$work/pg" "$pg_port"
PGPASSWORD="$pw" psql -X -q -h 127.0.0.1 -p "$pg_port" -U app -d orders -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE bench_rows AS
  SELECT g AS id, ('customer ' || g)::varchar(40) AS name,
         ('user' || g || '@example.com')::varchar(100) AS email,
         md5(g::text) || ' ' || md5((g + 1)::text) AS note,
         ((g % 100000) / 100.0)::numeric(12,2) AS amount,
         timestamp '2024-01-01' + g * interval '1 minute' AS created
  FROM generate_series(1, $ROWS) AS g;
ALTER TABLE bench_rows ADD PRIMARY KEY (id);
ANALYZE bench_rows;
SQL

"$server_bin" --listen "127.0.0.1:$tds_port" \
  --postgres "postgres://app:$pw@127.0.0.1:$pg_port/orders" >"$work/tds.log" 2>&1 &
tds_pid=$!
for _ in $(seq 50); do grep -q listening "$work/tds.log" && break; sleep 0.1; done
grep -q listening "$work/tds.log" || { cat "$work/tds.log" >&2; exit 1; }

cat > "$work/gw/policy.cedar" <<'CEDAR'
@id("bench-connect")
permit(principal in Group::"bench", action == Action::"connect", resource);
@id("bench-read")
permit(principal in Group::"bench", action in [Action::"sql.read", Action::"sql.session"], resource);
CEDAR
printf '%s' "held-$pw" > "$work/gw/pw"
{ gateway_config; cat <<TOML
[[listeners]]
protocol = "tds"
listen = "127.0.0.1:$gw_port"
[[connections]]
name = "sales"
protocol = "tds"
target = "127.0.0.1:$tds_port"
database = "orders"
user = "portcullis_app"
password_file = "pw"
encrypt = "off"
[[connections]]
name = "sales_masked"
protocol = "tds"
target = "127.0.0.1:$tds_port"
database = "orders"
user = "portcullis_app"
password_file = "pw"
encrypt = "off"
[[masking]]
connections = ["sales_masked"]
detectors = ["email", "card"]
columns = ["bench_rows.note"]
TOML
} > "$work/gw/portcullis.toml"
start_gateway
token=$(issue_token --sub bench --group bench)
key=$(PORTCULLIS_TOKEN="$token" "$bin" token exchange --gateway "http://127.0.0.1:$admin_port")

printf '[global]\n\ttds version = 7.4\n\tencryption = off\n' > "$work/freetds.conf"
export FREETDSCONF="$work/freetds.conf"
printf 'SELECT id, name, email, note, amount, created FROM bench_rows\ngo\nexit\n' > "$work/select.sql"
{ for i in $(seq "$BATCHES"); do
    printf 'SELECT id, name, email FROM bench_rows WHERE id = %d\ngo\n' $(((i * 7919) % ROWS + 1))
  done; echo exit; } > "$work/batches.sql"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)

run() { # target mode -> "seconds gateway-cpu-ms"
  local target=$1 mode=$2 port db user pass t0 t1 c0 c1
  case $target in
    direct) port=$tds_port; db=orders; user=app; pass=anything ;;
    gateway) port=$gw_port; db=sales; user=bench; pass=$key ;;
    masked) port=$gw_port; db=sales_masked; user=bench; pass=$key ;;
  esac
  c0=$(cpu_ticks "$gw_pid"); t0=$(date +%s%N)
  tsql -H 127.0.0.1 -p "$port" -U "$user" -P "$pass" -D "$db" -o q <"$work/$mode.sql" \
    >"$work/last.out" 2>"$work/last.err" || return 0
  t1=$(date +%s%N); c1=$(cpu_ticks "$gw_pid")
  awk -v t="$((t1 - t0))" -v c="$((c1 - c0))" -v hz="$tick" 'BEGIN{printf "%.3f %.0f\n", t / 1e9, c / hz * 1e3}'
}

# What each target returned, checked once: all the rows, masked only where asked.
check() { # target mode expected-lines
  run "$1" "$2" >/dev/null
  local n; n=$(grep -c 'example.com' "$work/last.out" || true)
  [ "$n" -ge "$3" ] || { echo "$1 $2: $n rows with an e-mail, expected $3:" >&2; head -5 "$work/last.out" "$work/last.err" >&2; exit 1; }
}
check direct select "$ROWS"; check gateway select "$ROWS"; check direct batches "$BATCHES"
run masked select >/dev/null
if grep -q '@example.com' "$work/last.out" || [ "$(grep -c 'REDACTED' "$work/last.out")" -lt "$ROWS" ]; then
  echo "masked select: e-mails not masked:" >&2; head -5 "$work/last.out" "$work/last.err" >&2; exit 1
fi

declare -A secs cpu
targets=(direct gateway masked)
modes=(select batches)
for round in $(seq "$ROUNDS"); do
  for mode in "${modes[@]}"; do
    # Rotate the order each round so no target always runs first or last.
    for i in 0 1 2; do
      t=${targets[$(((i + round) % 3))]}
      out=$(run "$t" "$mode")
      [ -n "$out" ] || { echo "tsql failed for $t $mode:" >&2; cat "$work/last.err" >&2; exit 1; }
      read -r s c <<<"$out"
      secs[$mode,$t]="${secs[$mode,$t]:-} $s"
      cpu[$mode,$t]="${cpu[$mode,$t]:-} $c"
      printf 'round %d %-8s %-8s %8.3f s %6d ms gateway cpu\n' "$round" "$mode" "$t" "$s" "$c" >&2
    done
  done
done

echo
echo "FreeTDS tsql against tds-testserver (PostgreSQL behind it), median of $ROUNDS interleaved rounds"
echo "select: $ROWS rows x 6 columns in one batch; batches: $BATCHES one-row batches in one session"
printf '%-8s %9s %9s %9s %11s %11s %14s %14s\n' seconds direct gateway masked gw/direct masked/direct "gw cpu ms" "masked cpu ms"
for mode in "${modes[@]}"; do
  d=$(echo "${secs[$mode,direct]}" | median); g=$(echo "${secs[$mode,gateway]}" | median)
  m=$(echo "${secs[$mode,masked]}" | median)
  gc=$(echo "${cpu[$mode,gateway]}" | median); mc=$(echo "${cpu[$mode,masked]}" | median)
  awk -v n="$mode" -v d="$d" -v g="$g" -v m="$m" -v gc="$gc" -v mc="$mc" \
    'BEGIN{printf "%-8s %9.3f %9.3f %9.3f %11.2f %11.2f %14d %14d\n", n, d, g, m, g/d, m/d, gc, mc}'
done
events=$(curl -fs "http://127.0.0.1:$admin_port/metrics" | awk '/^portcullis_audit_events_total/{print $2}')
echo "gateway audited $events events during the run"
