#!/usr/bin/env bash
# A cluster of the selected PostgreSQL (BACKSTOP_PG, 15 by default) with backstop preloaded, run
# as the postgres OS user.
#   scripts/cluster.sh start DIR PORT REPOSITORY_URL [EXTRA_SETTING ...]   (idempotent; restarts to load a new build)
#   scripts/cluster.sh stop DIR
#   scripts/cluster.sh psql DIR PORT [psql args ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

as_postgres() { runuser -u postgres -- "$@"; }

start() {
  local dir=$1 port=$2 repository=$3
  shift 3
  local data=$dir/pgdata
  mkdir -p "$dir/run"
  chown postgres:postgres "$dir" "$dir/run"
  if [[ ! -f $data/PG_VERSION ]]; then
    as_postgres "$PG_BIN/initdb" -D "$data" --auth=trust --locale=C.UTF-8 --encoding=UTF8 >/dev/null
  elif [[ $(cat "$data/PG_VERSION") != "$PG_MAJOR" ]]; then
    echo "$data holds a PostgreSQL $(cat "$data/PG_VERSION") cluster, not $PG_MAJOR (BACKSTOP_PG): use another directory" >&2
    exit 1
  fi
  if [[ $repository == file://* ]]; then
    mkdir -p "${repository#file://}"
    chown postgres:postgres "${repository#file://}"
  fi
  write_backstop_conf "$data" "$repository" "port = $port" "listen_addresses = '127.0.0.1'" \
    "unix_socket_directories = '$dir/run'" "$@"
  chown postgres:postgres "$data/backstop.conf" "$data/postgresql.conf"
  # A developer's RUST_BACKTRACE would make pgrx attach backtraces to cancelled statements' errors.
  unset RUST_BACKTRACE RUST_LIB_BACKTRACE
  if as_postgres "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$dir/server.log" -w restart -m fast >/dev/null
  else
    as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$dir/server.log" -w start >/dev/null
  fi
}

stop() {
  local data=$1/pgdata
  if [[ -f $data/PG_VERSION ]] && as_postgres "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_postgres "$PG_BIN/pg_ctl" -D "$data" -w stop -m fast >/dev/null
  fi
}

run_psql() {
  local dir=$1 port=$2
  shift 2
  as_postgres "$PG_BIN/psql" -X -h "$dir/run" -p "$port" "$@"
}

case ${1:-} in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  psql) shift; run_psql "$@" ;;
  *) echo "usage: $0 start DIR PORT REPOSITORY [SETTING...] | stop DIR | psql DIR PORT [ARGS...]" >&2; exit 2 ;;
esac
