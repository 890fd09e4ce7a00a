#!/usr/bin/env bash
# Bring up Portcullis in front of a real local PostgreSQL and show it working:
# a token from the built-in issuer, an allowed read and a refused DROP through psql,
# then the audit trail. Leaves everything running until Ctrl-C (on a terminal).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash deploy/setup.sh
echo "==> building portcullis"
cargo build -q -p portcullis
bin="$root/target/debug/portcullis"
demo="$root/.demo"
rm -rf "$demo"; mkdir -p "$demo"
export ORDERS_PASSWORD="demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

echo "==> starting PostgreSQL on 127.0.0.1:25432 (throwaway cluster in $demo/pg)"
PG_APP_PASSWORD="$ORDERS_PASSWORD" bash tests/scripts/pg.sh start "$demo/pg" 25432 $$

echo "==> starting the gateway (examples/quickstart.toml)"
"$bin" config check --config examples/quickstart.toml
"$bin" serve --config examples/quickstart.toml >"$demo/gateway.log" 2>&1 &
gw=$!
trap 'kill $gw 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs http://127.0.0.1:18080/healthz >/dev/null 2>&1 && break; sleep 0.1; done

token=$("$bin" token issue --config examples/quickstart.toml --sub demo-pipeline --group ci --claim repository=acme/orders --ttl 30m)
echo "==> minted a token for demo-pipeline (group ci): ${token:0:24}..."
run() { echo; echo "\$ psql ... -c \"$1\""; PGPASSWORD="$token" psql -X -h 127.0.0.1 -p 15432 -U demo-pipeline -d orders -c "$1" || true; }
run "SELECT status, count(*) FROM orders GROUP BY status ORDER BY status"
run "DROP TABLE orders"
echo
echo "==> audit trail"
"$bin" audit tail --config examples/quickstart.toml -n 6
"$bin" audit verify --config examples/quickstart.toml
echo
echo "Connect yourself:  PGPASSWORD=\$($bin token issue --config examples/quickstart.toml --sub you --group ci) psql -h 127.0.0.1 -p 15432 -d orders"
if [ -t 0 ] && [ -z "${CI:-}" ]; then
  echo "Gateway running (log: $demo/gateway.log). Ctrl-C stops it and the database."
  wait $gw
fi
