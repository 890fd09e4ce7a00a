#!/usr/bin/env bash
# Throwaway PostgreSQL cluster on a loopback port, for tests, the demo and benchmarks.
#   pg.sh start DIR PORT [OWNER_PID]   init (if needed) and start; with OWNER_PID, a watchdog
#                                      stops the cluster when that process exits
#   pg.sh stop DIR
# Roles: postgres (superuser, local socket), app (SCRAM, password $PG_APP_PASSWORD or "app-secret"),
# app_md5 (md5), app_trust (trust), app_tls (SCRAM, TLS only). TLS with a throwaway CA
# (DIR/tls/ca.crt). Database `orders` seeded from tests/fixtures/orders.sql.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cmd=${1:?usage: pg.sh start|stop DIR [PORT] [OWNER_PID]}
dir=${2:?DIR required}
bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
password=${PG_APP_PASSWORD:-app-secret}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
  port=${3:?PORT required}
  owner=${4:-}
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; chmod 700 "$dir"; fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    # TLS: a throwaway CA and a server certificate for `localhost` only (tls/ca.crt is
    # what a client verifies against). The role app_tls may only log in over TLS.
    tls="$dir/tls"
    as_pg mkdir -p "$tls"
    as_pg openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
      -subj "/CN=portcullis test CA" -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
    as_pg openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' \
      | as_pg tee "$tls/server.ext" >/dev/null
    as_pg openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" \
      -CAcreateserial -days 30 -extfile "$tls/server.ext" -out "$tls/server.crt" 2>/dev/null
    as_pg chmod 600 "$tls/server.key" "$tls/ca.key"
    cat > "$dir/data/pg_hba.conf" <<HBA
local all all trust
hostssl all app_tls 127.0.0.1/32 scram-sha-256
hostnossl all app_tls 127.0.0.1/32 reject
host all app_trust 127.0.0.1/32 trust
host all app_md5 127.0.0.1/32 md5
host all all 127.0.0.1/32 scram-sha-256
HBA
    fresh=1
  fi
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=128MB -c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key" >/dev/null
  if [ "${fresh:-0}" = 1 ]; then
    psql_su() { as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres "$@"; }
    psql_su -d postgres <<SQL
SET password_encryption = 'scram-sha-256';
CREATE ROLE app LOGIN PASSWORD '$password';
SET password_encryption = 'md5';
CREATE ROLE app_md5 LOGIN PASSWORD '$password';
CREATE ROLE app_trust LOGIN;
SET password_encryption = 'scram-sha-256';
CREATE ROLE app_tls LOGIN PASSWORD '$password';
CREATE DATABASE orders OWNER app;
SQL
    psql_su -d orders -c "SET ROLE app" -f "$root/tests/fixtures/orders.sql" >/dev/null
    psql_su -d orders -c "GRANT ALL ON ALL TABLES IN SCHEMA public TO app_md5, app_trust, app_tls" >/dev/null
  fi
  if [ -n "$owner" ]; then
    # Stop the cluster when the owning process (a test binary, the demo shell) exits.
    nohup bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; $(declare -f as_pg); as_pg '$bin/pg_ctl' -D '$dir/data' -m immediate stop >/dev/null 2>&1; rm -rf '$dir'" >/dev/null 2>&1 &
  fi
  ;;
stop)
  [ -f "$dir/data/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  ;;
*) echo "usage: pg.sh start|stop DIR [PORT] [OWNER_PID]" >&2; exit 2 ;;
esac
