#!/usr/bin/env bash
# A single-node Garage (S3-compatible object store) on loopback for tests and benchmarks.
#   scripts/garage.sh start   start it (idempotent), create bucket and key, print the env file path
#   scripts/garage.sh stop    stop it (data is kept)
#   scripts/garage.sh env     print the environment tests use to reach it
# State lives in $BACKSTOP_GARAGE_DIR (default /var/lib/backstop-test/garage).
set -euo pipefail

GARAGE_DIR=${BACKSTOP_GARAGE_DIR:-/var/lib/backstop-test/garage}
GARAGE_BIN=${GARAGE_BIN:-/usr/local/bin/garage}
# Run as the postgres OS user when started by root, so that scenarios (run as postgres) can stop
# and start it too.
GARAGE_USER=${BACKSTOP_GARAGE_USER:-postgres}
S3_PORT=${BACKSTOP_GARAGE_S3_PORT:-3900}
RPC_PORT=${BACKSTOP_GARAGE_RPC_PORT:-3901}
ADMIN_PORT=${BACKSTOP_GARAGE_ADMIN_PORT:-3903}
BUCKET=backstop-test
# Fixed test credentials for a loopback-only server: imported, so every run uses the same ones.
KEY_ID=GK0123456789abcdef01234567
SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
CONFIG=$GARAGE_DIR/garage.toml
PIDFILE=$GARAGE_DIR/garage.pid
LOG=$GARAGE_DIR/garage.log

as_owner() {
  if [[ $(id -u) == 0 ]] && id "$GARAGE_USER" >/dev/null 2>&1; then runuser -u "$GARAGE_USER" -- "$@"; else "$@"; fi
}

garage() { as_owner "$GARAGE_BIN" -c "$CONFIG" "$@"; }

running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

write_config() {
  mkdir -p "$GARAGE_DIR/meta" "$GARAGE_DIR/data"
  [[ -f $GARAGE_DIR/rpc_secret ]] || od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$GARAGE_DIR/rpc_secret"
  cat > "$CONFIG" <<TOML
metadata_dir = "$GARAGE_DIR/meta"
data_dir = "$GARAGE_DIR/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(cat "$GARAGE_DIR/rpc_secret")"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
TOML
  chmod 600 "$CONFIG"
  if [[ $(id -u) == 0 ]] && id "$GARAGE_USER" >/dev/null 2>&1; then
    chown "$GARAGE_USER" "$(dirname "$GARAGE_DIR")"
    chown -R "$GARAGE_USER" "$GARAGE_DIR"
  fi
}

wait_for_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "garage did not open port $1; see $LOG" >&2
  return 1
}

start() {
  [[ -x $GARAGE_BIN ]] || { echo "garage is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
  write_config
  if ! running; then
    as_owner bash -c 'nohup "$1" -c "$2" server >>"$3" 2>&1 & echo $! > "$4"' _ "$GARAGE_BIN" "$CONFIG" "$LOG" "$PIDFILE"
  fi
  wait_for_port "$RPC_PORT"
  wait_for_port "$S3_PORT"
  if ! garage layout show 2>/dev/null | grep -q "Current cluster layout version: [1-9]"; then
    local node
    for _ in $(seq 1 50); do
      node=$(garage node id -q 2>/dev/null | cut -d@ -f1) && [[ -n $node ]] && break
      sleep 0.2
    done
    garage layout assign -z dc1 -c 1G "$node" >/dev/null
    garage layout apply --version 1 >/dev/null
  fi
  for _ in $(seq 1 50); do
    garage bucket info "$BUCKET" >/dev/null 2>&1 && break
    garage bucket create "$BUCKET" >/dev/null 2>&1 && break
    sleep 0.2
  done
  garage key info "$KEY_ID" >/dev/null 2>&1 || garage key import --yes -n backstop-test "$KEY_ID" "$SECRET" >/dev/null
  garage bucket allow --read --write --owner "$BUCKET" --key "$KEY_ID" >/dev/null
  env_file > "$GARAGE_DIR/env.tmp" && mv "$GARAGE_DIR/env.tmp" "$GARAGE_DIR/env"
  echo "$GARAGE_DIR/env"
}

stop() {
  if running; then
    kill "$(cat "$PIDFILE")"
    for _ in $(seq 1 100); do running || break; sleep 0.1; done
  fi
  rm -f "$PIDFILE"
}

env_file() {
  cat <<ENV
export BACKSTOP_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export BACKSTOP_TEST_S3_BUCKET=$BUCKET
export BACKSTOP_TEST_S3_REGION=garage
export BACKSTOP_TEST_S3_ACCESS_KEY_ID=$KEY_ID
export BACKSTOP_TEST_S3_SECRET_ACCESS_KEY=$SECRET
export BACKSTOP_TEST_GARAGE_CTL=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/garage.sh
export AWS_EC2_METADATA_DISABLED=true
ENV
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  env) env_file ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
