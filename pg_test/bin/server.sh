#!/usr/bin/env bash
# Shell side of the scheduler scenario: what happens to the server behind SQL's back.
#   server.sh restart-after SECONDS   stops the scenario's server (fast shutdown), keeps it down SECONDS, starts it and waits until it accepts connections
#   server.sh kill-9 PID              kills a process with SIGKILL (the postmaster then restarts every
#                                     backend: a crash), waits until the server accepts connections again
#   server.sh log-has TEXT            says whether the server log has a line with TEXT
#   server.sh hold-lock DB TABLE SECONDS  holds an ACCESS EXCLUSIVE lock on TABLE for SECONDS, in the background
#   server.sh standby-start           makes a streaming standby of the server (pg_basebackup -R, the
#                                     next port, its own socket directory) and starts it
#   server.sh standby-sql DB SQL      runs SQL on the standby; prints the rows unaligned
#   server.sh standby-wait DB SQL SECONDS  polls SQL on the standby until it returns t (prints t or f)
#   server.sh standby-stop            stops the standby and removes it
# Environment (pg_test/run.sh): PGDATA, PGHOST, PGPORT. Prints one deterministic line.
set -uo pipefail
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}

wait_ready() {
  for _ in $(seq 1 600); do
    "$pg_bin/pg_isready" -q && psql -X -qAt -d postgres -c "SELECT 1" > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

standby=$(dirname "$PGDATA")/standby
standby_port=$((PGPORT + 1))
standby_psql() { psql -X -qAt -h "$standby/run" -p "$standby_port" "$@"; }

case $1 in
  standby-start)
    rm -rf "$standby" && mkdir -p "$standby/run" &&
      "$pg_bin/pg_basebackup" -D "$standby/pgdata" -R -X stream -c fast > "$standby/basebackup.log" 2>&1 &&
      printf "port = %s\nunix_socket_directories = '%s'\n" "$standby_port" "$standby/run" >> "$standby/pgdata/postgresql.auto.conf" &&
      "$pg_bin/pg_ctl" -D "$standby/pgdata" -w -l "$standby/server.log" start > /dev/null &&
      for _ in $(seq 1 300); do
        [[ $(standby_psql -d postgres -c "SELECT pg_is_in_recovery()" 2> /dev/null) == t ]] && echo "a standby streams from this server" && exit 0
        sleep 0.1
      done
    echo "the standby did not start (see $standby)"
    ;;
  standby-sql)
    standby_psql -d "$2" -c "$3" 2>&1
    ;;
  standby-wait)
    for _ in $(seq 1 $(($4 * 10))); do
      [[ $(standby_psql -d "$2" -c "$3" 2> /dev/null) == t ]] && echo t && exit 0
      sleep 0.1
    done
    echo f
    ;;
  standby-stop)
    "$pg_bin/pg_ctl" -D "$standby/pgdata" -w -m fast stop > /dev/null && rm -rf "$standby" && echo "the standby was stopped and removed"
    ;;
  restart-after)
    "$pg_bin/pg_ctl" -D "$PGDATA" -w -m fast stop > /dev/null && sleep "$2" &&
      "$pg_bin/pg_ctl" -D "$PGDATA" -w -l "$(dirname "$PGDATA")/server.log" start > /dev/null &&
      wait_ready && echo "server stopped, down for $2 s, started again"
    ;;
  kill-9)
    kill -9 "$2" && sleep 1 && wait_ready && echo "killed the process with SIGKILL; the server restarted after the crash"
    ;;
  log-has)
    if grep -qF -- "$2" "$(dirname "$PGDATA")/server.log"; then echo "the server log has: $2"; else echo "the server log lacks: $2"; fi
    ;;
  hold-lock)
    db=$2 table=$3 seconds=$4
    (psql -X -q -d "$db" -c "BEGIN; LOCK TABLE $table IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep($seconds); COMMIT;" > /dev/null 2>&1 &)
    for _ in $(seq 1 100); do
      held=$(psql -X -qAt -d "$db" -c "SELECT count(*) FROM pg_locks WHERE relation = '$table'::regclass AND mode = 'AccessExclusiveLock' AND granted")
      [[ $held == 1 ]] && echo "holding an exclusive lock on $table for $seconds s" && exit 0
      sleep 0.1
    done
    echo "could not take the lock on $table"
    ;;
esac
