#!/usr/bin/env bash
# Runs every DBA story in pg_test/scenarios/*.sql (or those whose names contain one of the
# NAME_FILTERs) with psql against a fresh cluster of the selected PostgreSQL (BACKSTOP_PG, 15 by
# default) with backstop preloaded and a file:// repository, and compares the output with
# pg_test/expected/<name>.out (or <name>.pgNN.out where a version's output differs, saying why). Scenarios reach Garage through the psql variables s3_endpoint,
# s3_bucket, s3_access_key_id and s3_secret_access_key (never echoed: psql prints the variable
# names). A scenario whose first line is "-- needs: PostgreSQL NN (why)" is skipped, with that
# printed, on older versions. Prints "N passed, N failed"; exits non-zero when any scenario differs.
#   pg_test/run.sh [NAME_FILTER ...]   (after BACKSTOP_TEST_HOOKS=1 install_backstop, as scripts/test.sh does:
#   the schedule scenarios speed up the scheduler's clock with backstop.test_clock, a test-only hook)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

SCENARIO_DIR=${BACKSTOP_SCENARIO_DIR:-/var/lib/backstop-test/scenario}
SCENARIO_PORT=${BACKSTOP_SCENARIO_PORT:-5434}
RESULTS=pg_test/results
[[ $PG_MAJOR == 15 ]] || RESULTS=pg_test/results/pg$PG_MAJOR
filters=("$@")

mkdir -p "$RESULTS"

# A standby a scenario made (pg_test/bin/server.sh standby-start) and left running.
stop_standby() {
  if [[ -f $SCENARIO_DIR/standby/pgdata/postmaster.pid ]]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$SCENARIO_DIR/standby/pgdata" -w -m immediate stop >/dev/null 2>&1 || true
  fi
}

# Every scenario gets a cluster of its own: its own system identifier (so its own repository
# namespace), statistics and configuration.
fresh_cluster() {
  stop_standby
  scripts/cluster.sh stop "$SCENARIO_DIR" 2>/dev/null || true
  rm -rf "$SCENARIO_DIR"
  mkdir -p "$SCENARIO_DIR"
  scripts/cluster.sh start "$SCENARIO_DIR" "$SCENARIO_PORT" "file://$SCENARIO_DIR/repository" \
    "lc_messages = 'C'" "wal_keep_size = '4GB'" "max_wal_size = '4GB'"
}

# For the shell side of scenarios (pg_test/bin/*.sh, run by psql's \! as the postgres user).
export PGDATA=$SCENARIO_DIR/pgdata PGHOST=$SCENARIO_DIR/run PGPORT=$SCENARIO_PORT
export BACKSTOP_REPOSITORY=file://$SCENARIO_DIR/repository
export AWS_EC2_METADATA_DISABLED=true
# The selected version's own client programs first (pg_dump, pg_ctl, psql of the same major).
export PG_BIN
export PATH="$PWD/pg_test/bin:$PG_BIN:$PATH"

# The SQL of released versions, for the upgrade scenario: CREATE EXTENSION backstop VERSION '0.1.0'.
install -m 0644 sql/released/backstop--*.sql "$("$PG_CONFIG" --sharedir)/extension/"

passed=0
failed=0
for scenario in pg_test/scenarios/*.sql; do
  name=$(basename "$scenario" .sql)
  if ((${#filters[@]})); then
    matched=
    for filter in "${filters[@]}"; do [[ $name == *$filter* ]] && matched=1; done
    [[ -n $matched ]] || continue
  fi
  actual=$RESULTS/$name.out
  # A scenario of a feature newer than this PostgreSQL says so in its first line, and is skipped
  # with that reason printed: "-- needs: PostgreSQL 17 (why)".
  needs=$(head -1 "$scenario" | sed -nE 's/^-- needs: PostgreSQL ([0-9]+).*$/\1/p')
  if [[ -n $needs ]] && ((PG_MAJOR < needs)); then
    echo "skip $name on PostgreSQL $PG_MAJOR: $(head -1 "$scenario" | sed 's/^-- needs: //')"
    continue
  fi
  expected=pg_test/expected/$name.out
  [[ -f pg_test/expected/$name.pg$PG_MAJOR.out ]] && expected=pg_test/expected/$name.pg$PG_MAJOR.out
  if ! fresh_cluster; then
    echo "FAIL $name: could not start a cluster (see $SCENARIO_DIR/server.log)"
    failed=$((failed + 1))
    continue
  fi
  # The scenario runs in a database named after it; its output carries no timings or identifiers.
  scripts/cluster.sh psql "$SCENARIO_DIR" "$SCENARIO_PORT" -d postgres -q -c "CREATE DATABASE \"$name\"" >/dev/null
  scripts/cluster.sh psql "$SCENARIO_DIR" "$SCENARIO_PORT" -d "$name" -a -v VERBOSITY=default \
    -v s3_endpoint="${BACKSTOP_TEST_S3_ENDPOINT:-}" -v s3_bucket="${BACKSTOP_TEST_S3_BUCKET:-}" \
    -v s3_access_key_id="${BACKSTOP_TEST_S3_ACCESS_KEY_ID:-}" -v s3_secret_access_key="${BACKSTOP_TEST_S3_SECRET_ACCESS_KEY:-}" \
    -f - < "$scenario" > "$actual" 2>&1
  if [[ ! -f $expected ]]; then
    echo "FAIL $name: no expected output (pg_test/expected/$name.out); got $actual"
    failed=$((failed + 1))
  elif diff -u "$expected" "$actual" > "$RESULTS/$name.diff"; then
    echo "ok   $name"
    passed=$((passed + 1))
    rm -f "$RESULTS/$name.diff"
  else
    echo "FAIL $name"
    cat "$RESULTS/$name.diff"
    failed=$((failed + 1))
  fi
done
stop_standby
scripts/cluster.sh stop "$SCENARIO_DIR"
echo "scenarios: $passed passed, $failed failed"
((failed == 0))
