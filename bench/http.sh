#!/usr/bin/env bash
# HTTP API requests through Portcullis' HTTP gateway vs through nginx as a plain reverse
# proxy vs straight to the backend, interleaved in one run, medians of ROUNDS runs each.
#
#   bench/http.sh           # ROUNDS=3 SECONDS_EACH=8 CONNECTIONS=32
#
# Backend: nginx answering every GET with a fixed 1 KB ARM-shaped JSON document (so the
# backend is fast and the proxies' cost shows). Load: wrk, keep-alive, CONNECTIONS
# connections on 2 threads. Every leg is plain HTTP/1.1 on loopback. Targets:
#   direct   wrk -> backend
#   nginx    wrk -> nginx (proxy_pass, upstream keep-alive; decides nothing) -> backend
#   gateway  wrk -> portcullis (bearer token verified once per connection, every request
#            decided by Cedar policy and audited, held API key added) -> backend
# Prints requests/s and p99 latency per target and the ratios to nginx.
set -euo pipefail
ROUNDS=${ROUNDS:-3}; SECONDS_EACH=${SECONDS_EACH:-8}; CONNECTIONS=${CONNECTIONS:-32}
source "$(dirname "$0")/lib.sh"
bench_init portcullis-http-bench
be_port=$base_port; ngx_port=$((base_port + 1)); gw_port=$((base_port + 2))
cleanup() {
  stop_gateway
  for p in "$work"/nginx-*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

doc='{"id":"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-prod","name":"rg-prod","type":"Microsoft.Resources/resourceGroups","location":"westeurope","tags":{"env":"prod","owner":"platform","costCenter":"4711"},"properties":{"provisioningState":"Succeeded"},"managedBy":null,"padding":"'$(head -c 640 /dev/zero | tr '\0' 'x')'"}'
nginx_conf() { # name port body-of-server
  mkdir -p "$work/nginx-$1"
  cat > "$work/nginx-$1.conf" <<NGINX
worker_processes 1;
daemon on;
pid $work/nginx-$1.pid;
error_log $work/nginx-$1/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx-$1;
  proxy_temp_path $work/nginx-$1;
  fastcgi_temp_path $work/nginx-$1;
  uwsgi_temp_path $work/nginx-$1;
  scgi_temp_path $work/nginx-$1;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$be_port; keepalive 64; }
  server {
    listen 127.0.0.1:$2;
    $3
  }
}
NGINX
  nginx -p "$work/nginx-$1" -c "$work/nginx-$1.conf"
}
nginx_conf backend "$be_port" "location / { default_type application/json; return 200 '$doc'; }"
nginx_conf proxy "$ngx_port" "location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"

cat > "$work/gw/policy.cedar" <<'CEDAR'
@id("bench-connect")
permit(principal in Group::"bench", action == Action::"connect", resource);
@id("bench-read")
permit(principal in Group::"bench", action == Action::"http.read", resource)
unless { context.path like "/secrets/*" };
CEDAR
printf 'held-%s' "$RANDOM$RANDOM" > "$work/gw/api.key"
{ gateway_config; cat <<TOML
[[listeners]]
protocol = "http"
listen = "127.0.0.1:$gw_port"
[[connections]]
name = "arm"
protocol = "http"
target = "127.0.0.1:$be_port"
[connections.http]
scheme = "http"
header = { name = "x-api-key", value_file = "api.key" }
TOML
} > "$work/gw/portcullis.toml"
start_gateway
token=$(issue_token --sub bench --group bench)

path=/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-prod
url() { case $1 in
  direct) echo "http://127.0.0.1:$be_port$path" ;;
  nginx) echo "http://127.0.0.1:$ngx_port$path" ;;
  gateway) echo "http://127.0.0.1:$gw_port/c/arm$path" ;;
esac; }
# Each target answers the document before it is measured.
for t in direct nginx gateway; do
  body=$(curl -fsS -H "Authorization: Bearer $token" "$(url $t)")
  [ "$body" = "$doc" ] || { echo "$t: unexpected answer: ${body:0:200}" >&2; exit 1; }
done

run() { # target -> "requests/s p99-ms"
  wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" --latency \
    -H "Authorization: Bearer $token" "$(url "$1")" >"$work/wrk.out" 2>&1
  if grep -q 'Non-2xx' "$work/wrk.out"; then cat "$work/wrk.out" >&2; exit 1; fi
  awk '/Requests\/sec/ {r=$2}
       /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p=v}
       END {printf "%.0f %.3f\n", r, p}' "$work/wrk.out"
}

declare -A rps p99
targets=(direct nginx gateway)
for round in $(seq "$ROUNDS"); do
  for i in 0 1 2; do
    t=${targets[$(((i + round) % 3))]}
    read -r r p <<<"$(run "$t")"
    rps[$t]="${rps[$t]:-} $r"; p99[$t]="${p99[$t]:-} $p"
    printf 'round %d %-8s %9s req/s  p99 %8s ms\n' "$round" "$t" "$r" "$p" >&2
  done
done

echo
echo "wrk -t2 -c$CONNECTIONS, ${SECONDS_EACH}s per run, GET of a 1 KB JSON document, median of $ROUNDS interleaved rounds"
printf '%-8s %10s %10s %12s %12s\n' target "req/s" "p99 ms" "req/s/nginx" "p99/nginx"
nr=$(echo "${rps[nginx]}" | median); np=$(echo "${p99[nginx]}" | median)
for t in "${targets[@]}"; do
  r=$(echo "${rps[$t]}" | median); p=$(echo "${p99[$t]}" | median)
  awk -v t="$t" -v r="$r" -v p="$p" -v nr="$nr" -v np="$np" \
    'BEGIN{printf "%-8s %10.0f %10.3f %12.2f %12.2f\n", t, r, p, r/nr, p/np}'
done
events=$(curl -fs "http://127.0.0.1:$admin_port/metrics" | awk '/^portcullis_audit_events_total/{print $2}')
echo "gateway audited $events events during the run"
