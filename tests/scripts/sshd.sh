#!/usr/bin/env bash
# Throwaway OpenSSH server on a loopback port, for tests and benchmarks.
#   sshd.sh start DIR PORT [OWNER_PID]   generate keys (if needed) and start; with OWNER_PID,
#                                        a watchdog stops the server when that process exits
#   sshd.sh stop DIR
# DIR gets: host_ed25519(.pub), id_ed25519(.pub) (the client key sshd accepts for the
# current user), known_hosts (the host key for [127.0.0.1]:PORT), host_fingerprint.
set -euo pipefail
cmd=${1:?usage: sshd.sh start|stop DIR [PORT] [OWNER_PID]}
dir=${2:?DIR required}
case "$cmd" in
start)
  port=${3:?PORT required}
  owner=${4:-}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ "$(id -u)" = 0 ] && mkdir -p /run/sshd
  [ -f "$dir/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C test-sshd-host -f "$dir/host_ed25519"
  [ -f "$dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C portcullis-test -f "$dir/id_ed25519"
  cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
  chmod 600 "$dir/authorized_keys"
  echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_ed25519.pub")" > "$dir/known_hosts"
  ssh-keygen -l -E sha256 -f "$dir/host_ed25519.pub" | awk '{print $2}' > "$dir/host_fingerprint"
  cat > "$dir/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
UsePAM no
StrictModes no
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
AcceptEnv LANG LC_* PORTCULLIS_TEST_*
Subsystem sftp internal-sftp
MaxStartups 200:30:400
MaxSessions 100
LogLevel ERROR
CONF
  /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
  for _ in $(seq 1 100); do
    [ -s "$dir/sshd.pid" ] && break
    sleep 0.05
  done
  [ -s "$dir/sshd.pid" ] || { cat "$dir/sshd.log" >&2; exit 1; }
  if [ -n "$owner" ]; then
    pid=$(cat "$dir/sshd.pid")
    nohup bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; kill $pid 2>/dev/null; rm -rf '$dir'" >/dev/null 2>&1 &
  fi
  ;;
stop)
  [ -s "$dir/sshd.pid" ] && kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true
  ;;
*)
  echo "unknown command $cmd" >&2; exit 2 ;;
esac
