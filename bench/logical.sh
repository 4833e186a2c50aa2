#!/usr/bin/env bash
# Logical backups, side by side in one run on one database: backstop.logical_backup() (pg_dump -Fc
# -Z0 streamed into a local repository with zstd, checksums, the read-back into pg_restore --list)
# and `backstop logical restore` (verify, then pg_restore --single-transaction), against plain
# `pg_dump -Fc` to a local file and `pg_restore` from it, the habit backstop replaces.
#
# The database is pgbench's at BENCH_SCALE (default 30, about 450 MB of tables and indexes),
# vacuumed and checkpointed first. Archiving is off: nothing else competes for the two cores.
#
#   dump     seconds, bytes stored (backstop: the repository's logical/ objects; pg_dump: the file)
#   restore  seconds into a new database, then a check that every pgbench table holds the same rows
#
#   bench/logical.sh   (BENCH_SCALE=30, BENCH_SKIP_BUILD=1 to reuse the installed build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

SCALE=${BENCH_SCALE:-30}
DIR=${BENCH_DIR:-/var/lib/backstop-bench/logical}
PORT=${BENCH_PORT:-5443}
prepare_bench

RUN=$DIR/cluster/run
REPOSITORY=$DIR/repository
OUT=$DIR/out
DUMP=$OUT/bench.dump

as_postgres() { runuser -u postgres -- "$@"; }
sql() { as_postgres "$PG_BIN/psql" -X -qAt -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -d "${2:-bench}" -c "$1"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cleanup() { scripts/cluster.sh stop "$DIR/cluster" 2>/dev/null || true; }
trap cleanup EXIT

step "fresh cluster in $DIR/cluster (port $PORT), pgbench scale $SCALE"
cleanup
rm -rf "$DIR"
mkdir -p "$DIR" "$OUT"
chown postgres:postgres "$DIR" "$OUT"
scripts/cluster.sh start "$DIR/cluster" "$PORT" "file://$REPOSITORY" "archive_mode = off" \
  "backstop.database = 'bench'" "backstop.scheduler = off" "max_wal_size = '4GB'"
sql "CREATE DATABASE bench" postgres
sql "CREATE EXTENSION backstop"
as_postgres "$PG_BIN/pgbench" -q -i -s "$SCALE" -h "$RUN" -p "$PORT" bench >/dev/null 2>&1
sql "VACUUM (FREEZE, ANALYZE)"
sql "CHECKPOINT"
echo "database: $(sql "SELECT pg_size_pretty(pg_database_size('bench'))")"
fingerprint() {
  sql "SELECT string_agg(t || '=' || n, ' ' ORDER BY t) FROM (
         SELECT 'accounts' t, count(*) n FROM pgbench_accounts UNION ALL SELECT 'branches', count(*) FROM pgbench_branches
         UNION ALL SELECT 'tellers', count(*) FROM pgbench_tellers UNION ALL SELECT 'history', count(*) FROM pgbench_history) s" "$1"
}
original=$(fingerprint bench)

step "dump: backstop.logical_backup()"
started=$(now)
sql "SELECT state FROM backstop.logical_backup()" >/dev/null
backstop_dump_s=$(since "$started")
backstop_bytes=$(du -sb "$REPOSITORY" | awk '{ print $1 }')

step "dump: pg_dump -Fc to a local file"
started=$(now)
as_postgres env PGHOST="$RUN" PGPORT="$PORT" "$PG_BIN/pg_dump" -Fc -f "$DUMP" bench
pg_dump_s=$(since "$started")
pg_dump_bytes=$(stat -c %s "$DUMP")

step "restore: backstop logical restore"
key=$(sql "SELECT backstop.repository_key()")
started=$(now)
as_postgres env PGHOST="$RUN" PGPORT="$PORT" BACKSTOP_REPOSITORY="file://$REPOSITORY" \
  backstop logical restore --trusted-key "$key" --dbname from_backstop >/dev/null
backstop_restore_s=$(since "$started")

step "restore: pg_restore from the file"
sql "CREATE DATABASE from_pg_restore" postgres
started=$(now)
as_postgres env PGHOST="$RUN" PGPORT="$PORT" "$PG_BIN/pg_restore" --exit-on-error -d from_pg_restore "$DUMP"
pg_restore_s=$(since "$started")

for restored in from_backstop from_pg_restore; do
  found=$(fingerprint "$restored")
  [[ $found == "$original" ]] || { echo "FAIL: $restored holds $found, not $original" >&2; exit 1; }
done

{
  echo "pgbench scale $SCALE, $(sql "SELECT pg_size_pretty(pg_database_size('bench'))"); every restore checked: $original"
  echo
  echo "| | dump s | MB stored | restore s |"
  echo "|---|---|---|---|"
  echo "| backstop (stream, zstd, checksums, --list check; verify then restore) | $backstop_dump_s | $(mb "$backstop_bytes") | $backstop_restore_s |"
  echo "| pg_dump -Fc to a file / pg_restore | $pg_dump_s | $(mb "$pg_dump_bytes") | $pg_restore_s |"
  echo
  echo "ratios (backstop / plain): dump time $(ratio "$backstop_dump_s" "$pg_dump_s"), bytes $(ratio "$backstop_bytes" "$pg_dump_bytes"), restore time $(ratio "$backstop_restore_s" "$pg_restore_s")"
} | tee "$DIR/results.txt"
