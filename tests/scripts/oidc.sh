#!/usr/bin/env bash
# A real OpenID Connect provider (tests/oidc/server.mjs, node-oidc-provider) on a loopback
# port, for end-to-end tests of token verification.
#   oidc.sh start DIR PORT [OWNER_PID]   install deps (if needed), start, wait for discovery;
#                                        with OWNER_PID, a watchdog stops the provider when
#                                        that process exits
#   oidc.sh stop DIR
# Issuer http://127.0.0.1:PORT. Clients: ci-job/ci-secret (aud $AUDIENCE or api://portcullis,
# groups ci+deployers, repository claim), other-aud/secret (aud api://other). Token:
#   curl -s -u ci-job:ci-secret -d grant_type=client_credentials \
#        -d resource=api://portcullis http://127.0.0.1:PORT/token
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
app="$root/tests/oidc"
cmd=${1:?usage: oidc.sh start|stop DIR [PORT] [OWNER_PID]}
dir=${2:?DIR required}

case "$cmd" in
start)
  port=${3:?PORT required}
  owner=${4:-}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ ! -d "$app/node_modules/oidc-provider" ]; then
    (cd "$app" && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; }) \
      >"$dir/npm.log" 2>&1 || { cat "$dir/npm.log" >&2; exit 1; }
  fi
  if [ -f "$dir/oidc.pid" ] && kill -0 "$(cat "$dir/oidc.pid")" 2>/dev/null; then
    echo "oidc provider already running (pid $(cat "$dir/oidc.pid"))" >&2
    exit 1
  fi
  # `cd` first, so that $! is node itself and not a subshell around it.
  (cd "$app"; PORT="$port" nohup node server.mjs >"$dir/oidc.log" 2>&1 & echo $! >"$dir/oidc.pid")
  pid=$(cat "$dir/oidc.pid")
  url="http://127.0.0.1:$port/.well-known/openid-configuration"
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then
      ready=1
      break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.2
  done
  if [ "${ready:-0}" != 1 ]; then
    echo "oidc provider did not answer $url within 20 s; log:" >&2
    cat "$dir/oidc.log" >&2
    kill "$pid" 2>/dev/null || true
    rm -f "$dir/oidc.pid"
    exit 1
  fi
  if [ -n "$owner" ]; then
    # Stop the provider when the owning process (a test binary, the demo shell) exits.
    nohup bash -c "while kill -0 $owner 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 1; done; kill $pid 2>/dev/null; rm -f '$dir/oidc.pid'" >/dev/null 2>&1 &
  fi
  echo "http://127.0.0.1:$port"
  ;;
stop)
  if [ -f "$dir/oidc.pid" ]; then
    pid=$(cat "$dir/oidc.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/oidc.pid"
  fi
  ;;
*) echo "usage: oidc.sh start|stop DIR [PORT] [OWNER_PID]" >&2; exit 2 ;;
esac
