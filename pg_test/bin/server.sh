#!/usr/bin/env bash
# Shell side of the scheduler scenario: what happens to the server behind SQL's back.
#   server.sh restart-after SECONDS   stops the scenario's server (fast shutdown), keeps it down SECONDS, starts it and waits until it accepts connections
#   server.sh kill-9 PID              kills a process with SIGKILL (the postmaster then restarts every
#                                     backend: a crash), waits until the server accepts connections again
#   server.sh log-has TEXT            says whether the server log has a line with TEXT
#   server.sh hold-lock DB TABLE SECONDS  holds an ACCESS EXCLUSIVE lock on TABLE for SECONDS, in the background
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

case $1 in
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
