#!/usr/bin/env bash
# Kubernetes API GETs through Portcullis' kube gateway vs through nginx as a plain TLS
# reverse proxy vs straight to the backend, interleaved in one run, medians of ROUNDS runs.
#
#   bench/kube.sh           # ROUNDS=3 SECONDS_EACH=8 CONNECTIONS=1
#
# Backend: nginx over TLS answering `GET /api/v1/namespaces/default/pods/web-0` with a fixed
# pod document (~2 KB, as an API server returns it), so the backend is fast and the proxies'
# cost shows. (No real kube-apiserver can be installed here; what the gateway does per
# request does not depend on who answers.) Load: wrk over TLS with keep-alive, CONNECTIONS
# connections (1 by default: latency, one request at a time). Targets:
#   direct   wrk -> backend
#   nginx    wrk -> nginx (TLS both sides, upstream keep-alive; decides nothing) -> backend
#   gateway  wrk -> portcullis (bearer token verified once per connection, request info
#            derived, decided by Cedar policy and audited, held token added) -> backend
# Prints p50/p99 latency and requests/s per target, and the p50 each proxy adds to direct.
set -euo pipefail
ROUNDS=${ROUNDS:-3}; SECONDS_EACH=${SECONDS_EACH:-8}; CONNECTIONS=${CONNECTIONS:-1}
source "$(dirname "$0")/lib.sh"
bench_init portcullis-kube-bench
be_port=$base_port; ngx_port=$((base_port + 1)); gw_port=$((base_port + 2))
cleanup() {
  stop_gateway
  for p in "$work"/nginx-*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

bash tests/scripts/tls-ca.sh "$work/tls"
tls="$work/tls"
pod='{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web-0","namespace":"default","uid":"6f1c2b1e-5b7d-4a43-9a55-0c1c9c0e7d11","resourceVersion":"4711","creationTimestamp":"2026-01-01T00:00:00Z","labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"registry.example/web:1.4.2","ports":[{"containerPort":8080,"protocol":"TCP"}],"resources":{"limits":{"cpu":"500m","memory":"256Mi"}}}],"restartPolicy":"Always","serviceAccountName":"default","nodeName":"node-1"},"status":{"phase":"Running","podIP":"10.0.0.12","conditions":[{"type":"Ready","status":"True"}],"containerStatuses":[{"name":"web","ready":true,"restartCount":0,"image":"registry.example/web:1.4.2"}]},"padding":"'$(head -c 1200 /dev/zero | tr '\0' 'x')'"}'
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
    listen 127.0.0.1:$2 ssl;
    ssl_certificate $tls/server.crt;
    ssl_certificate_key $tls/server.key;
    $3
  }
}
NGINX
  nginx -p "$work/nginx-$1" -c "$work/nginx-$1.conf"
}
nginx_conf backend "$be_port" "location / { default_type application/json; return 200 '$pod'; }"
nginx_conf proxy "$ngx_port" "location / { proxy_pass https://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_ssl_session_reuse on; }"

cat > "$work/gw/policy.cedar" <<'CEDAR'
@id("bench-connect")
permit(principal in Group::"bench", action == Action::"connect", resource);
@id("bench-read")
permit(principal in Group::"bench", action in [Action::"kube.get", Action::"kube.list"], resource)
unless { context has resource && context.resource == "secrets" };
CEDAR
printf 'held-%s' "$RANDOM$RANDOM" > "$work/gw/sa.token"
{ gateway_config; cat <<TOML
[[listeners]]
protocol = "kube"
listen = "127.0.0.1:$gw_port"
tls = { cert = "$tls/server.crt", key = "$tls/server.key" }
[[connections]]
name = "prod"
protocol = "kube"
target = "127.0.0.1:$be_port"
sslrootcert = "$tls/ca.crt"
[connections.kube]
token_file = "sa.token"
server_name = "localhost"
TOML
} > "$work/gw/portcullis.toml"
start_gateway
token=$(issue_token --sub bench --group bench)

path=/api/v1/namespaces/default/pods/web-0
url() { case $1 in
  direct) echo "https://localhost:$be_port$path" ;;
  nginx) echo "https://localhost:$ngx_port$path" ;;
  gateway) echo "https://localhost:$gw_port/c/prod$path" ;;
esac; }
# Each target answers the document before it is measured.
for t in direct nginx gateway; do
  body=$(curl -fsS --cacert "$tls/ca.crt" -H "Authorization: Bearer $token" "$(url $t)")
  [ "$body" = "$pod" ] || { echo "$t: unexpected answer: ${body:0:200}" >&2; exit 1; }
done

ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.3f\n", v}'; }
run() { # target -> "requests/s p50-ms p99-ms"
  wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" --latency \
    -H "Authorization: Bearer $token" "$(url "$1")" >"$work/wrk.out" 2>&1
  if grep -q 'Non-2xx' "$work/wrk.out"; then cat "$work/wrk.out" >&2; exit 1; fi
  local r p50 p99
  r=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  p50=$(awk '/^ +50%/ {print $2}' "$work/wrk.out" | ms)
  p99=$(awk '/^ +99%/ {print $2}' "$work/wrk.out" | ms)
  echo "$r $p50 $p99"
}

declare -A rps p50s p99s
targets=(direct nginx gateway)
for round in $(seq "$ROUNDS"); do
  for i in 0 1 2; do
    t=${targets[$(((i + round) % 3))]}
    read -r r a b <<<"$(run "$t")"
    rps[$t]="${rps[$t]:-} $r"; p50s[$t]="${p50s[$t]:-} $a"; p99s[$t]="${p99s[$t]:-} $b"
    printf 'round %d %-8s %9s req/s  p50 %7s ms  p99 %7s ms\n' "$round" "$t" "$r" "$a" "$b" >&2
  done
done

echo
echo "wrk -t1 -c$CONNECTIONS over TLS, ${SECONDS_EACH}s per run, GET of a pod, median of $ROUNDS interleaved rounds"
printf '%-8s %10s %9s %9s %14s %12s\n' target "req/s" "p50 ms" "p99 ms" "p50 added ms" "p50/direct"
dp=$(echo "${p50s[direct]}" | median)
for t in "${targets[@]}"; do
  r=$(echo "${rps[$t]}" | median); a=$(echo "${p50s[$t]}" | median); b=$(echo "${p99s[$t]}" | median)
  awk -v t="$t" -v r="$r" -v a="$a" -v b="$b" -v d="$dp" \
    'BEGIN{printf "%-8s %10.0f %9.3f %9.3f %14.3f %12.2f\n", t, r, a, b, a-d, a/d}'
done
events=$(curl -fs "http://127.0.0.1:$admin_port/metrics" | awk '/^portcullis_audit_events_total/{print $2}')
echo "gateway audited $events events during the run"
