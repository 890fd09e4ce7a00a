#!/usr/bin/env bash
# smoke.sh: drive the test API server (apiserver.py) with a real kubectl and check that every
# path the gateway will carry works: discovery, tables, CRUD, client- and server-side apply,
# watch, logs, exec, attach, port-forward, impersonation, client certificates, and the server's error answers.
#
#   KUBECTL=/usr/lib/google-cloud-sdk/bin/kubectl.1.33 bash tests/kube/smoke.sh
#
# KUBECTL defaults to /usr/bin/kubectl. Clients older than 1.30 exec over SPDY/3.1, later
# ones over WebSocket; port-forward goes over SPDY for all. Exits non-zero, listing what
# failed, if any check fails.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KUBECTL=${KUBECTL:-/usr/bin/kubectl}
tmp=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

bash "$here/../scripts/tls-ca.sh" "$tmp/tls"
# A client certificate for carol in group ops, signed by the same CA.
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=carol/O=ops" \
  -keyout "$tmp/tls/carol.key" -out "$tmp/tls/carol.csr" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' > "$tmp/tls/client.ext"
openssl x509 -req -in "$tmp/tls/carol.csr" -CA "$tmp/tls/ca.crt" -CAkey "$tmp/tls/ca.key" \
  -CAcreateserial -days 2 -extfile "$tmp/tls/client.ext" -out "$tmp/tls/carol.crt" 2>/dev/null

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
token=smoke-held-token
log=$tmp/api.log
python3 "$here/apiserver.py" --port "$port" --log "$log" --cert "$tmp/tls/server.crt" \
  --key "$tmp/tls/server.key" --token "$token" --client-ca "$tmp/tls/ca.crt" 2>"$tmp/server.err" &
pid=$!
api() { curl -sS --cacert "$tmp/tls/ca.crt" "$@"; }
for _ in $(seq 50); do
  api -o /dev/null -H "Authorization: Bearer $token" "https://127.0.0.1:$port/healthz" \
    2>/dev/null && break
  sleep 0.1
done

export HOME=$tmp/home KUBECONFIG=$tmp/kubeconfig
mkdir -p "$HOME"
cat > "$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:$port", certificate-authority: "$tmp/tls/ca.crt"}
users:
- name: held
  user: {token: "$token"}
- name: wrong
  user: {token: not-the-token}
- name: carol
  user: {client-certificate: "$tmp/tls/carol.crt", client-key: "$tmp/tls/carol.key"}
contexts:
- name: test
  context: {cluster: test, user: held, namespace: default}
- name: wrong
  context: {cluster: test, user: wrong}
- name: carol
  context: {cluster: test, user: carol}
current-context: test
EOF

minor=$("$KUBECTL" version --client -o json 2>/dev/null \
  | python3 -c 'import json, sys
print(int(json.load(sys.stdin)["clientVersion"]["minor"].rstrip("+")))')
echo "kubectl: $KUBECTL (1.$minor), server on port $port"
failed=()
out=$tmp/out

# check NAME WANT_RC PATTERN CMD...: CMD exits WANT_RC ("any" for any) and its output
# (stdout and stderr) matches the extended regular expression PATTERN.
check() {
  local name=$1 want=$2 pattern=$3 rc
  shift 3
  timeout 30 bash -c '"$@"' check "$@" >"$out" 2>&1
  rc=$?
  if { [ "$want" = any ] || [ "$rc" = "$want" ]; } && grep -Eq -- "$pattern" "$out"; then
    echo "ok    $name"
  else
    echo "FAIL  $name (rc $rc, wanted $want; /$pattern/):"
    sed 's/^/      /' "$out" | head -20
    failed+=("$name")
  fi
}
# refute NAME PATTERN FILE: FILE has no line matching PATTERN.
refute() {
  if grep -Eq -- "$2" "$3"; then
    echo "FAIL  $1: /$2/ found in:"
    grep -E -- "$2" "$3" | head -5 | sed 's/^/      /'
    failed+=("$1")
  else
    echo "ok    $1"
  fi
}
k() { "$KUBECTL" "$@"; }
export KUBECTL tmp
export -f k api

cat > "$tmp/pod.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: smoke-pod
  labels: {app: smoke}
spec:
  containers:
  - name: app
    image: nginx:1.27
EOF
sed 's/nginx:1.27/nginx:1.28/' "$tmp/pod.yaml" > "$tmp/pod2.yaml"

check "get ns" 0 'kube-system +Active' k get ns
check "get ns lists prod" 0 '^prod +Active' k get ns
check "get pods" 0 'web-0 +1/1 +Running +0' k get pods
check "get po -o yaml" 0 'name: web-0' k get po -o yaml
check "get pods -l app=web" 0 'web-0' k get pods -l app=web
check "get pods -l app=none" 0 'No resources found' k get pods -l app=none
check "get secret -o yaml" 0 'password: aHVudGVyMi1zM2NyZXQ=' k get secret db-creds -o yaml
check "get secrets (table)" 0 'db-creds +Opaque +2' k get secrets
check "get cm app-config" 0 'Password=Sup3rSecret!' k get cm app-config -o yaml
check "get missing pod" 1 'Error from server \(NotFound\): pods "nope" not found' k get pod nope
check "create configmap" 0 'configmap/x created' k create configmap x --from-literal=a=b
check "create configmap again" 1 'configmaps "x" already exists' \
  k create configmap x --from-literal=a=b
check "get cm x" 0 '^x +1 ' k get cm x
check "apply (create)" 0 'pod/smoke-pod created' k apply -f "$tmp/pod.yaml"
check "apply (same)" 0 'pod/smoke-pod (unchanged|configured)' k apply -f "$tmp/pod.yaml"
check "apply (changed)" 0 'pod/smoke-pod configured' k apply -f "$tmp/pod2.yaml"
check "apply changed image" 0 '^nginx:1.28 .*last-applied' \
  k get pod smoke-pod -o 'jsonpath={.spec.containers[0].image} {.metadata.annotations}'
check "apply --server-side" 0 'pod/smoke-pod serverside-applied' \
  k apply --server-side --force-conflicts -f "$tmp/pod.yaml"
check "patch (merge)" 0 'patched' \
  k patch pod smoke-pod --type=merge -p '{"metadata":{"labels":{"tier":"x"}}}'
check "patch (json)" 0 'patched' k patch pod smoke-pod --type=json \
  -p '[{"op":"replace","path":"/metadata/labels/tier","value":"y"}]'
check "label selector sees patch" 0 'smoke-pod' k get pods -l tier=y
check "delete pod" 0 'pod "smoke-pod" deleted' k delete pod smoke-pod
check "deleted pod is gone" 1 'NotFound' k get pod smoke-pod

# A watch sees a pod created by another client while it runs.
timeout 6 "$KUBECTL" get pods -w >"$tmp/watch.out" 2>&1 &
watcher=$!
sleep 2.5
k run watched --image=nginx:1.27 >/dev/null 2>&1
sleep 1
k delete pod watched --wait=false >/dev/null 2>&1
wait "$watcher"
check "get pods -w sees a new pod" any '^watched +1/1 +Running' cat "$tmp/watch.out"

# logs -f streams: after 2 s there are the 10 earlier lines and some new ones, not all 100.
timeout 2 "$KUBECTL" logs -f web-0 >"$tmp/logs.out" 2>&1
check "logs -f streams" any '^line 1[2-9]$' cat "$tmp/logs.out"
refute "logs -f stops with the client" '^line (2[5-9]|[3-9][0-9]|100)$' "$tmp/logs.out"
check "logs --tail=2" 0 '^line 9$' k logs web-0 --tail=2
check "logs -c web" 0 '^line 10$' k logs web-0 -c web

check "exec echo" 0 '^hello$' k exec web-0 -- echo hello
printf 'echo hi\nexit 3\n' >"$tmp/stdin"
check "exec -i sh (exit 3)" 3 '^hi$' sh -c "\"$KUBECTL\" exec -i web-0 -- sh <\"$tmp/stdin\""
check "exec false" 1 'command terminated with exit code 1' k exec web-0 -- false
check "exec sh -c" 4 'web-0' k exec web-0 -- sh -c 'hostname; exit 4'
check "exec -it sh (tty)" 5 '\$ hostname.*web-0.*exit 5' python3 - "$KUBECTL" <<'EOF'
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], [sys.argv[1], "exec", "-it", "web-0", "--", "sh"])
out = b""
def pump(seconds):
    global out
    end = time.time() + seconds
    while time.time() < end:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:
                return
for keys in (b"hostname\r", b"exit 5\r"):
    pump(1.5)
    os.write(fd, keys)
pump(2)
_, status = os.waitpid(pid, 0)
print(out.decode(errors="replace").replace("\r\n", " "))
sys.exit(os.WEXITSTATUS(status))
EOF
printf 'echo attached\nexit 0\n' >"$tmp/attach.in"
check "attach -i" 0 '^attached$' sh -c "\"$KUBECTL\" attach -i web-0 <\"$tmp/attach.in\""
check "port-forward" 0 '^HELLO POD$' python3 - "$KUBECTL" <<'EOF'
import re, socket, subprocess, sys, time
pf = subprocess.Popen([sys.argv[1], "port-forward", "pod/web-0", ":80"],
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
try:
    line = pf.stdout.readline()
    port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"hello pod\n")
        print(s.recv(100).decode().strip())
finally:
    pf.terminate()
EOF

check "auth whoami" 0 'token-user' k auth whoami
check "auth whoami --as" 0 'Username +alice' k auth whoami --as alice --as-group devs
check "auth whoami --as groups" 0 'Groups +\[devs system:authenticated\]' \
  k auth whoami --as alice --as-group devs
check "client certificate" 0 'Username +carol' k --context carol auth whoami
check "client certificate groups" 0 '\[ops system:authenticated\]' k --context carol auth whoami
check "wrong token" 1 'Unauthorized' k --context wrong get pods

check "create deployment" 0 'deployment.apps/smoke-deploy created' \
  k create deployment smoke-deploy --image=nginx:1.27
check "scale deployment" 0 'deployment.apps/smoke-deploy scaled' \
  k scale deploy/smoke-deploy --replicas=3
check "deployment scaled" 0 'smoke-deploy +3/3 +3 +3' k get deploy
check "delete configmap --all" 0 'configmap "app-config" deleted' \
  k delete configmap --all -n default
check "no configmaps left" 0 'No resources found' k get cm

# What reached the server: the held token on every kubectl request, impersonation headers,
# the client certificate's subject, and the exec upgrade.
check "log: held token" 0 'ok' python3 - "$log" "$token" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
want = ["Bearer " + sys.argv[2]]
assert all(l["headers"]["authorization"] in (want, ["Bearer not-the-token"]) or l["client_cert"]
           for l in lines), "a request without the held token"
assert any(l["headers"]["impersonate-user"] == ["alice"]
           and l["headers"]["impersonate-group"] == ["devs"] for l in lines)
assert any(l["client_cert"] == "CN=carol,O=ops" and l["user"] == "carol" for l in lines)
print("ok")
EOF
check "log: exec upgrade" 0 'ok' python3 -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
want = ["websocket"] if int(sys.argv[2]) >= 30 else ["SPDY/3.1"]
assert any(l["status"] == 101 and l["headers"]["upgrade"] == want for l in lines)
print("ok")' "$log" "$minor"

# The server's own error answers: Status objects, never a traceback; and it survives a
# client that vanishes mid-stream.
base=https://127.0.0.1:$port
check "401 Status" 0 '"reason": "Unauthorized".*"code": 401' api "$base/api/v1/pods"
check "404 Status" 0 '"reason": "NotFound"' api -H "Authorization: Bearer $token" "$base/nope"
check "400 on bad JSON" 0 '"code": 400' api -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/json' -d '{not json' "$base/api/v1/namespaces/default/configmaps"
check "415 on unknown patch type" 0 '"code": 415' api -H "Authorization: Bearer $token" \
  -X PATCH -H 'Content-Type: text/plain' -d x "$base/api/v1/namespaces/default/pods/web-0"
timeout 1 curl -sS -N --cacert "$tmp/tls/ca.crt" -H "Authorization: Bearer $token" \
  "$base/api/v1/namespaces/default/pods/web-0/log?follow=true" >/dev/null 2>&1
timeout 1 curl -sS -N --cacert "$tmp/tls/ca.crt" -H "Authorization: Bearer $token" \
  "$base/api/v1/pods?watch=true" >/dev/null 2>&1
check "alive after vanished clients" 0 'web-0' k get pods
refute "no traceback" 'Traceback' "$tmp/server.err"

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED with kubectl 1.$minor: ${failed[*]}"
  exit 1
fi
echo "all checks passed with kubectl 1.$minor"
