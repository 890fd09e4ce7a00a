#!/usr/bin/env bash
# Result masking throughput: a 1,000,000-row (id, name, email, card) table read with psql
# (`COPY (SELECT * FROM t) TO STDOUT` and `SELECT * FROM t`, output to /dev/null) directly,
# through the gateway with no masking for the identity, and through the gateway with the
# `email` and `card` detectors on (every row has an e-mail and a card, so every row is
# rewritten). Interleaved rounds, medians.
#
#   bench/masking.sh            # ROUNDS=3 ROWS=1000000
#
# Prints seconds and MB/s per target and query, and the ratio to direct.
set -euo pipefail
ROUNDS=${ROUNDS:-3}; ROWS=${ROWS:-1000000}
source "$(dirname "$0")/lib.sh"
bench_init portcullis-maskbench
pw="bench-$RANDOM$RANDOM"
pg_port=$base_port; gw_port=$((base_port + 1))
cleanup() {
  stop_gateway
  bash tests/scripts/pg.sh stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT

PG_APP_PASSWORD="$pw" bash tests/scripts/pg.sh start "$work/pg" "$pg_port"
PGPASSWORD="$pw" psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U app -d orders <<SQL
CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL, card text NOT NULL);
INSERT INTO t
SELECT g, 'Customer ' || g, 'user' || g || '@example.com',
       (ARRAY['4111 1111 1111 1111', '5500-0000-0000-0004', '3782-822463-10005', '6011 1111 1111 1117'])[1 + g % 4]
FROM generate_series(1, $ROWS) AS g;
VACUUM ANALYZE t;
SQL

# One gateway; the `nomask` group is exempt from the block, so the same gateway serves the
# unmasked and the masked runs.
cat > "$work/gw/policy.cedar" <<'CEDAR'
@id("bench-connect")
permit(principal in Group::"bench", action == Action::"connect", resource);
@id("bench-read")
permit(principal in Group::"bench", action == Action::"sql.read", resource);
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
[[masking]]
connections = ["orders"]
detectors = ["email", "card"]
unmasked_groups = ["nomask"]
TOML
} > "$work/gw/portcullis.toml"
start_gateway
plain=$(issue_token --sub bench --group bench --group nomask)
masked=$(issue_token --sub bench --group bench)

declare -A SQL=([copy]="COPY (SELECT * FROM t) TO STDOUT" [select]="SELECT * FROM t")
conn() { # target -> "port user password"
  case $1 in
    direct) echo "$pg_port app $pw" ;;
    gateway) echo "$gw_port bench $plain" ;;
    masked) echo "$gw_port bench $masked" ;;
  esac
}
run() { # target query -> seconds
  local port user pass t0 t1
  read -r port user pass <<<"$(conn "$1")"
  t0=$(date +%s.%N)
  PGPASSWORD="$pass" psql -X -At -h 127.0.0.1 -p "$port" -U "$user" -d orders -c "${SQL[$2]}" -o /dev/null 2>"$work/last.err" \
    || { echo "psql failed for $1 $2:" >&2; cat "$work/last.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}'
}
bytes() { # target query -> bytes of output
  local port user pass
  read -r port user pass <<<"$(conn "$1")"
  PGPASSWORD="$pass" psql -X -At -h 127.0.0.1 -p "$port" -U "$user" -d orders -c "${SQL[$2]}" | wc -c
}

# A masked run must really mask: nothing of the originals left.
leaks=$(PGPASSWORD="$masked" psql -X -At -h 127.0.0.1 -p "$gw_port" -U bench -d orders -c "${SQL[copy]}" | grep -c -e '@example.com' -e '1111 1111' || true)
[ "$leaks" = 0 ] || { echo "masking left $leaks rows unmasked" >&2; exit 1; }

declare -A secs
targets=(direct gateway masked)
queries=(copy select)
for q in "${queries[@]}"; do run direct "$q" >/dev/null; done  # warm the cache
for round in $(seq "$ROUNDS"); do
  for q in "${queries[@]}"; do
    for i in 0 1 2; do
      t=${targets[$(((i + round) % 3))]}
      s=$(run "$t" "$q")
      secs[$q,$t]="${secs[$q,$t]:-} $s"
      printf 'round %d %-6s %-8s %7.3f s\n' "$round" "$q" "$t" "$s" >&2
    done
  done
done

echo
echo "$ROWS rows (id, name, email, card), psql to /dev/null, median of $ROUNDS interleaved rounds"
echo "MB/s counts the bytes of the unmasked output (what the target produced)"
printf '%-7s %-8s %9s %9s %9s %12s\n' query target seconds MB/s x-direct output-bytes
for q in "${queries[@]}"; do
  d=$(echo "${secs[$q,direct]}" | median)
  size=$(bytes direct "$q")
  for t in "${targets[@]}"; do
    s=$(echo "${secs[$q,$t]}" | median)
    out=$(bytes "$t" "$q")
    awk -v q="$q" -v t="$t" -v s="$s" -v d="$d" -v n="$size" -v o="$out" \
      'BEGIN{printf "%-7s %-8s %9.3f %9.1f %9.2f %12d\n", q, t, s, n/s/1e6, d/s, o}'
  done
done
