#!/usr/bin/env bash
# "When did it happen?" over about 2 GB of WAL: backstop.table_history() against the manual way,
# pg_waldump of the same segments piped through grep for the table's relation file and the
# commits. One cluster (PostgreSQL 15), one run.
#
#   setup      a table `orders` changed now and then (inserts, an update, a mass delete) while
#              pgbench transactions and bulk loads of another table write BENCH_WAL_MB of WAL
#              (default 2048) around it; everything archived
#              into a file:// repository
#   timed      backstop.table_history('orders', since => the start), which reads the archived
#              segments (authenticated, decompressed) and lists the transactions; then
#              `pg_waldump <first> <last> | grep -E 'rel <file>|COMMIT'` on the same segments in
#              pg_wal (uncompressed, local: the manual way's best case), which still leaves the
#              DBA to match xids to commits by hand
#   checked    both find the mass delete's transaction
#
#   bench/table_history.sh   (BENCH_WAL_MB=2048; BENCH_SKIP_BUILD=1 reuses the installed build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

WAL_MB=${BENCH_WAL_MB:-2048}
DIR=${BENCH_DIR:-/var/lib/backstop-bench-history}
PORT=${BENCH_PORT:-5451}

ensure_debian_packages
ensure_postgres
[[ -n ${BENCH_SKIP_BUILD:-} ]] || BACKSTOP_PROFILE=release install_backstop

as_postgres() { runuser -u postgres -- "$@"; }
sql() { as_postgres "$PG_BIN/psql" -X -qAt -h "$DIR/cluster/run" -p "$PORT" -d postgres -c "$1"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
wal_lsn() { sql "SELECT pg_current_wal_insert_lsn()"; }
wal_mb_since() { sql "SELECT round(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$1') / 1048576)"; }

scripts/cluster.sh stop "$DIR/cluster" 2>/dev/null || true
rm -rf "$DIR"
mkdir -p "$DIR/cluster"
chown -R postgres:postgres "$DIR"
scripts/cluster.sh start "$DIR/cluster" "$PORT" "file://$DIR/repository" "max_wal_size = '8GB'" \
  "wal_keep_size = '4GB'" "checkpoint_timeout = '30min'" > /dev/null
sql "CREATE EXTENSION IF NOT EXISTS backstop" > /dev/null
sql "CREATE TABLE orders (id bigint PRIMARY KEY, note text)"
sql "SELECT state FROM backstop.base_backup(kind => 'full')" > /dev/null 2>&1
start_time=$(sql "SELECT now()")
start_lsn=$(wal_lsn)
first_segment=$(sql "SELECT pg_walfile_name('$start_lsn')")

echo "== writing about $WAL_MB MB of WAL, orders changed along the way" >&2
as_postgres "$PG_BIN/pgbench" -h "$DIR/cluster/run" -p "$PORT" -i -s 10 -q postgres > /dev/null 2>&1
sql "CREATE TABLE filler (id bigint, pad text)"
round=0
while (($(wal_mb_since "$start_lsn") < WAL_MB)); do
  round=$((round + 1))
  sql "INSERT INTO orders SELECT g, 'round $round' FROM generate_series($round * 1000, $round * 1000 + 999) g"
  # Other work around it: small pgbench transactions, and a bulk load of about 100 MB of WAL.
  as_postgres "$PG_BIN/pgbench" -h "$DIR/cluster/run" -p "$PORT" -n -T 2 -c 2 -j 2 postgres > /dev/null 2>&1
  sql "INSERT INTO filler SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 300000) g"
  if ((round == 3)); then
    sql "UPDATE orders SET note = 'paid' WHERE id % 2 = 0"
    delete_xid=$(sql "BEGIN; DELETE FROM orders WHERE id % 3 = 0; SELECT txid_current(); COMMIT;" | head -1)
  fi
done
last_segment=$(sql "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
sql "SELECT pg_switch_wal()" > /dev/null
for _ in $(seq 1 1200); do
  [[ $(sql "SELECT last_archived_wal >= '$last_segment' FROM pg_stat_archiver") == t ]] && break
  sleep 0.5
done
sql "CHECKPOINT" > /dev/null
wal_mb=$(wal_mb_since "$start_lsn")
segments=$(ls "$DIR/cluster/pgdata/pg_wal" | awk -v a="$first_segment" -v b="$last_segment" '$0 >= a && $0 <= b && length($0) == 24' | wc -l)
relfile=$(sql "SELECT '1663/' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '/' || pg_relation_filenode('orders')")
sync

echo "== timed" >&2
t=$(now)
found=$(sql "SELECT count(*) || ' ' || count(*) FILTER (WHERE xid = $delete_xid AND deleted > 0)
               FROM backstop.table_history('orders', since => '$start_time', max_rows => 100000)")
backstop_seconds=$(since "$t")
t=$(now)
grepped=$(as_postgres "$PG_BIN/pg_waldump" -p "$DIR/cluster/pgdata/pg_wal" "$first_segment" "$last_segment" 2>/dev/null \
  | grep -E "rel $relfile |COMMIT" | grep -c "tx: *$delete_xid,")
waldump_seconds=$(since "$t")

echo
echo "table_history over $wal_mb MB of WAL ($segments segments), PostgreSQL $PG_MAJOR, $(nproc) cores"
printf "%-58s %8s\n" "" "seconds"
printf "%-58s %8s\n" "backstop.table_history('orders') (from the repository)" "$backstop_seconds"
printf "%-58s %8s\n" "pg_waldump | grep (pg_wal, local, uncompressed)" "$waldump_seconds"
echo "changes listed by table_history: ${found% *}; the mass delete among them: ${found#* }"
echo "pg_waldump lines of the mass delete's transaction: $grepped"
echo "ratio backstop / pg_waldump | grep: $(awk -v a="$backstop_seconds" -v b="$waldump_seconds" 'BEGIN { printf "%.2f", a / b }')"
scripts/cluster.sh stop "$DIR/cluster" > /dev/null 2>&1 || true
