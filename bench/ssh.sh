#!/usr/bin/env bash
# SSH through Portcullis vs directly to sshd, interleaved rounds, medians.
#   throughput: `head -c $SIZE /dev/zero` over exec, output to /dev/null, timed
#   latency:    connect + log in + exec `true` + close, timed per connection
# Policy (every exec decided) and audit are on in the gateway. Run with the build lock held
# and CARGO_TARGET_DIR set when the target directory is shared.
#
#   bench/ssh.sh            # ROUNDS=5 SIZE=1G CONNECTS=20
set -euo pipefail
ROUNDS=${ROUNDS:-5}; SIZE=${SIZE:-1G}; CONNECTS=${CONNECTS:-20}
source "$(dirname "$0")/lib.sh"
bench_init portcullis-bench-ssh
sshd_port=$base_port; gw_port=$((base_port + 1))
cleanup() {
  stop_gateway
  bash tests/scripts/sshd.sh stop "$work/sshd" || true
  rm -rf "$work"
}
trap cleanup EXIT

bash tests/scripts/sshd.sh start "$work/sshd" "$sshd_port"
user=$(id -un)

cat > "$work/gw/policy.cedar" <<'CEDAR'
@id("bench-connect")
permit(principal in Group::"bench", action == Action::"connect", resource);
@id("bench-exec")
permit(principal in Group::"bench", action == Action::"ssh.exec", resource);
@id("no-rm")
@reason("deleting files is not allowed through the gateway")
forbid(principal, action == Action::"ssh.exec", resource)
when { context has command && context.command like "*rm *" };
CEDAR
{ gateway_config; cat <<TOML
[[listeners]]
protocol = "ssh"
listen = "127.0.0.1:$gw_port"
[[connections]]
name = "bench"
protocol = "ssh"
target = "127.0.0.1:$sshd_port"
user = "$user"
private_key_file = "$work/sshd/id_ed25519"
known_hosts = "$work/sshd/known_hosts"
TOML
} > "$work/gw/portcullis.toml"
start_gateway
token=$(issue_token --sub bench --group bench)

common=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ControlMaster=no -o ControlPath=none)
ssh_to() { # target command...
  local t=$1; shift
  case $t in
    direct) ssh "${common[@]}" -o BatchMode=yes -i "$work/sshd/id_ed25519" -p "$sshd_port" "$user@127.0.0.1" "$@" ;;
    # The key exchange the gateway's front negotiates with this client (russh offers no
    # sntrup761), so connect latency can also be compared like for like.
    direct-c25519) ssh "${common[@]}" -o KexAlgorithms=curve25519-sha256 -o BatchMode=yes \
               -i "$work/sshd/id_ed25519" -p "$sshd_port" "$user@127.0.0.1" "$@" ;;
    gateway) sshpass -p "$token" ssh "${common[@]}" -o PubkeyAuthentication=no \
               -o PreferredAuthentications=password -p "$gw_port" bench@127.0.0.1 "$@" ;;
  esac
}
now() { date +%s.%N; }

throughput() { # target -> MB/s
  local t0 t1
  t0=$(now)
  ssh_to "$1" "head -c $SIZE /dev/zero" >/dev/null
  t1=$(now)
  local bytes
  bytes=$(numfmt --from=iec "$SIZE")
  awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN{printf "%.1f", b/(z-a)/1e6}'
}

latency() { # target -> median ms of CONNECTS connections
  local i t0 t1 all=""
  for i in $(seq "$CONNECTS"); do
    t0=$(now); ssh_to "$1" true; t1=$(now)
    all="$all $(awk -v a="$t0" -v z="$t1" 'BEGIN{printf "%.2f", (z-a)*1000}')"
  done
  echo "$all" | median
}

# Warm up both paths (first connection pays for key loading and caches).
ssh_to direct true; ssh_to direct-c25519 true; ssh_to gateway true

declare -A mbps lat
targets=(direct gateway direct-c25519)
for round in $(seq "$ROUNDS"); do
  for i in 0 1 2; do
    t=${targets[$(((i + round) % 3))]}
    v=-
    if [ "$t" != direct-c25519 ]; then v=$(throughput "$t"); mbps[$t]="${mbps[$t]:-} $v"; fi
    l=$(latency "$t"); lat[$t]="${lat[$t]:-} $l"
    printf 'round %d %-13s %8s MB/s %8s ms connect+true\n' "$round" "$t" "$v" "$l" >&2
  done
done

echo
echo "ssh exec of head -c $SIZE /dev/zero and connect+true (median of $CONNECTS), median of $ROUNDS interleaved rounds"
d=$(echo "${mbps[direct]}" | median); g=$(echo "${mbps[gateway]}" | median)
awk -v d="$d" -v g="$g" 'BEGIN{printf "throughput  direct %8.1f MB/s  gateway %8.1f MB/s  gateway/direct %.2f\n", d, g, g/d}'
d=$(echo "${lat[direct]}" | median); g=$(echo "${lat[gateway]}" | median)
awk -v d="$d" -v g="$g" 'BEGIN{printf "latency     direct %8.2f ms    gateway %8.2f ms    gateway/direct %.2f\n", d, g, g/d}'
d=$(echo "${lat[direct-c25519]}" | median)
awk -v d="$d" -v g="$g" 'BEGIN{printf "latency     direct %8.2f ms    gateway %8.2f ms    gateway/direct %.2f  (direct with curve25519-sha256, the gateway front'"'"'s key exchange)\n", d, g, g/d}'
