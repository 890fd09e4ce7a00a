# Shared by the benchmarks: sourced, not run. Sets up the workspace, the gateway and medians.
#
#   source "$(dirname "$0")/lib.sh"
#   bench_init portcullis-bench      # root, bin, work, base_port; installs and builds
#   { gateway_config; cat <<TOML ... TOML } > "$work/gw/portcullis.toml"   # + listeners, connections
#   start_gateway                    # gw_pid, waits for /healthz
#   token=$(issue_token --sub bench --group bench)
#   trap 'stop_gateway; ...; rm -rf "$work"' EXIT

# Install what the benchmarks need, build the release binary, make a scratch directory.
# Sets root, bin, work, base_port and admin_port: ports base_port to base_port + 8 are the
# script's to use, admin_port (base_port + 9) is the gateway's admin listener.
bench_init() {
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  cd "$root"
  bash deploy/setup.sh
  cargo build -q --release -p portcullis
  bin="${CARGO_TARGET_DIR:-$root/target}/release/portcullis"
  work=$(mktemp -d "/tmp/$1.XXXXXX")
  # PostgreSQL's server runs as its own user and reads files here.
  chmod 755 "$work"
  mkdir -p "$work/gw"
  base_port=$((30000 + RANDOM % 10000))
  admin_port=$((base_port + 9))
  # The test cluster offers TLS; every path is measured in the clear, as the proxies reach it.
  export PGSSLMODE=disable
}

# The [gateway] section and the built-in issuer; policy in $work/gw/policy.cedar.
gateway_config() {
  cat <<TOML
[gateway]
state_dir = "state"
admin_listen = "127.0.0.1:$admin_port"
policy = "policy.cedar"
[[identity.issuers]]
name = "builtin"
TOML
}

# Start the gateway on $work/gw/portcullis.toml and wait until it is healthy.
start_gateway() {
  PORTCULLIS_LOG=warn "$bin" serve --config "$work/gw/portcullis.toml" 2>"$work/gw/log" &
  gw_pid=$!
  local _
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$admin_port/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$gw_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "the gateway did not become healthy:" >&2
  cat "$work/gw/log" >&2
  exit 1
}

stop_gateway() {
  [ -n "${gw_pid:-}" ] && kill "$gw_pid" 2>/dev/null || true
  # Its state directory is removed next: let it finish writing first.
  [ -n "${gw_pid:-}" ] && wait "$gw_pid" 2>/dev/null || true
}

# A two-hour token from the built-in issuer: issue_token --sub NAME --group G...
issue_token() {
  "$bin" token issue --config "$work/gw/portcullis.toml" --ttl 2h "$@"
}

# Median of the numbers on stdin (space or newline separated).
median() {
  tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'
}
