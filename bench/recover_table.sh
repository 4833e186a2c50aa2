#!/usr/bin/env bash
# One table as it was at a time, from a cluster of three databases: backstop.recover() against the
# manual path with pgBackRest, same data, one run (PostgreSQL 15).
#
#   setup      three databases of about BENCH_DB_GB GB together (default 4): `app` holds `orders`
#              (1M rows) and a big table, `crm` and `reports` one big table each; a backstop and a
#              pgBackRest full backup; then BENCH_WAL_MB MB of WAL (default 2048) of updates
#              across the three databases and to `orders`; the target time noted with the md5 of
#              `orders` then; a bad DELETE; everything archived to both (archive_command pushes
#              each segment with `backstop wal push` and `pgbackrest archive-push`)
#   backstop   SELECT * FROM backstop.recover('orders', target_time => T) in `app`: restores `app`
#              and what every database needs (the other two as holes), replays to T in a
#              throwaway server, copies the table in, validates it, prints the copy-back plans
#   manual     pgbackrest restore --type=time --target=T of the whole cluster into a new
#              directory, start it (restore_command = pgbackrest archive-get) until promoted,
#              pg_dump -Fc -t orders, stop it, pg_restore into a new database of the live server
#   checked    both copies hold the rows `orders` had at T (md5 of the rows in id order)
#
#   bench/recover_table.sh   (BENCH_DB_GB=4 BENCH_WAL_MB=2048; BENCH_SKIP_BUILD=1 reuses the build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

DB_GB=${BENCH_DB_GB:-4}
WAL_MB=${BENCH_WAL_MB:-2048}
DIR=${BENCH_DIR:-/var/lib/backstop-bench-recover}
PORT=${BENCH_PORT:-5452}
MANUAL_PORT=$((PORT + 1))

ensure_postgres
prepare_bench

as_postgres() { runuser -u postgres -- "$@"; }
sql() { as_postgres "$PG_BIN/psql" -X -qAt -h "$DIR/cluster/run" -p "$PORT" -d "${2:-postgres}" -c "$1"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
pgbr() { as_postgres pgbackrest --config="$DIR/pgbackrest.conf" --stanza=bench "$@"; }
wal_mb_since() { sql "SELECT round(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$1') / 1048576)"; }

scripts/cluster.sh stop "$DIR/cluster" 2>/dev/null || true
[[ -d $DIR/manual ]] && as_postgres "$PG_BIN/pg_ctl" -D "$DIR/manual" -m immediate stop > /dev/null 2>&1 || true
rm -rf "$DIR"
mkdir -p "$DIR/cluster" "$DIR/pgbackrest" "$DIR/pgbackrest-spool" "$DIR/pgbackrest-lock" "$DIR/pgbackrest-log" "$DIR/drills"
chown -R postgres:postgres "$DIR"
cat > "$DIR/pgbackrest.conf" <<CONF
[global]
repo1-path=$DIR/pgbackrest
compress-type=zst
compress-level=3
process-max=2
start-fast=y
spool-path=$DIR/pgbackrest-spool
lock-path=$DIR/pgbackrest-lock
log-path=$DIR/pgbackrest-log
log-level-console=warn
log-level-file=off

[bench]
pg1-path=$DIR/cluster/pgdata
pg1-socket-path=$DIR/cluster/run
pg1-port=$PORT
CONF
chown postgres:postgres "$DIR/pgbackrest.conf"
REPO=file://$DIR/backstop
push="/usr/local/bin/backstop wal push --repository $REPO %p && /usr/bin/pgbackrest --config=$DIR/pgbackrest.conf --stanza=bench archive-push %p"
# The load is not archived (nothing before the base backups is needed); archiving starts after it.
scripts/cluster.sh start "$DIR/cluster" "$PORT" "$REPO" "archive_library = ''" "archive_command = '/bin/true'" \
  "max_wal_size = '8GB'" "checkpoint_timeout = '30min'" "backstop.drill_directory = '$DIR/drills'" > /dev/null

echo "== loading three databases, about $DB_GB GB" >&2
rows_per_db=$((DB_GB * 1024 * 1024 * 1024 / 3 / 1000))
for db in app crm reports; do
  sql "CREATE DATABASE $db" > /dev/null
  sql "CREATE TABLE big (id bigint PRIMARY KEY, pad text)" "$db"
  sql "INSERT INTO big SELECT g, repeat(md5(g::text), 12) FROM generate_series(1, $rows_per_db) g" "$db"
done
sql "CREATE EXTENSION backstop" app
sql "CREATE TABLE orders (id bigint PRIMARY KEY, customer int, amount numeric(12,2), note text)" app
sql "INSERT INTO orders SELECT g, g % 5000, g * 0.37, 'order ' || g FROM generate_series(1, 1000000) g" app
sql "VACUUM ANALYZE" app > /dev/null
sql "CHECKPOINT" > /dev/null
CLUSTER_BYTES=$(du -sb "$DIR/cluster/pgdata" | cut -f1)

echo "== archiving on; full backups (backstop, pgBackRest)" >&2
sql "ALTER SYSTEM SET archive_command = '$push'" > /dev/null
sql "SELECT pg_reload_conf()" > /dev/null
pgbr stanza-create > /dev/null
sql "SELECT state FROM backstop.base_backup(kind => 'full')" app > /dev/null 2>&1
pgbr backup --type=full > /dev/null

echo "== writing about $WAL_MB MB of WAL across the databases" >&2
start_lsn=$(sql "SELECT pg_current_wal_insert_lsn()")
step=$((rows_per_db / 8))
round=0
while (($(wal_mb_since "$start_lsn") < WAL_MB)); do
  round=$((round + 1))
  for db in crm reports app; do
    lo=$(((round * step) % rows_per_db))
    sql "UPDATE big SET pad = md5(pad) || pad WHERE id BETWEEN $lo AND $((lo + step / 2))" "$db" > /dev/null
  done
  sql "UPDATE orders SET amount = amount + 1, note = 'round $round' WHERE id % 50 = $((round % 50))" app > /dev/null
done
WAL_WRITTEN=$(wal_mb_since "$start_lsn")
sleep 1
TARGET=$(sql "SELECT now()")
EXPECTED=$(sql "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM orders t" app)
sleep 1
sql "DELETE FROM orders WHERE id % 3 = 0" app > /dev/null
sql "UPDATE big SET pad = 'after' WHERE id < 1000" crm > /dev/null
segment=$(sql "SELECT pg_walfile_name(pg_current_wal_lsn())")
sql "SELECT pg_switch_wal()" > /dev/null
until [[ $(sql "SELECT coalesce(last_archived_wal, '') >= '$segment' FROM pg_stat_archiver") == t ]]; do sleep 1; done

echo "== backstop.recover('orders', target_time => '$TARGET')" >&2
sync
t=$(now)
sql "SET client_min_messages = warning; SELECT count(*) FROM backstop.recover('orders', target_time => '$TARGET')" app > /dev/null
TIME_BACKSTOP=$(since "$t")
GOT_BACKSTOP=$(sql "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM orders_recovered t" app)
RESTORED_BACKSTOP=$(sql "SELECT (result->>'restored_bytes')::bigint FROM backstop.job_runs WHERE kind = 'table_recover' ORDER BY job_id DESC LIMIT 1" app)

echo "== manual: pgbackrest restore --type=time, start, pg_dump -t, pg_restore" >&2
sync
t=$(now)
mkdir -p "$DIR/manual" && chown postgres:postgres "$DIR/manual" && chmod 700 "$DIR/manual"
pgbr restore --pg1-path="$DIR/manual" --type=time "--target=$TARGET" --target-action=promote > /dev/null
as_postgres "$PG_BIN/pg_ctl" -D "$DIR/manual" -l "$DIR/manual.log" -w -t 7200 \
  -o "-p $MANUAL_PORT -c unix_socket_directories=$DIR/manual -c listen_addresses='' -c archive_mode=off -c shared_preload_libraries=''" \
  start > /dev/null
until [[ $(as_postgres "$PG_BIN/psql" -X -qAt -h "$DIR/manual" -p "$MANUAL_PORT" -d postgres -c "SELECT NOT pg_is_in_recovery()" 2> /dev/null) == t ]]; do
  sleep 0.2
done
as_postgres "$PG_BIN/pg_dump" -h "$DIR/manual" -p "$MANUAL_PORT" -d app -t public.orders -Fc -f "$DIR/orders.dump"
as_postgres "$PG_BIN/pg_ctl" -D "$DIR/manual" -m fast -w stop > /dev/null
sql "CREATE DATABASE manual_target" > /dev/null
as_postgres "$PG_BIN/pg_restore" -h "$DIR/cluster/run" -p "$PORT" -d manual_target "$DIR/orders.dump"
TIME_MANUAL=$(since "$t")
GOT_MANUAL=$(sql "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM orders t" manual_target)
RESTORED_MANUAL=$(du -sb "$DIR/manual" | cut -f1)
rm -rf "$DIR/manual"

echo
echo "cluster: $((CLUSTER_BYTES / 1048576)) MB in three databases; WAL from the backups to the target: $WAL_WRITTEN MB"
printf '%-44s %8s s   restored %6s MB   rows as at the target: %s\n' "backstop.recover('orders', target_time)" \
  "$TIME_BACKSTOP" "$((RESTORED_BACKSTOP / 1048576))" "$([[ $GOT_BACKSTOP == "$EXPECTED" ]] && echo yes || echo NO)"
printf '%-44s %8s s   restored %6s MB   rows as at the target: %s\n' "pgbackrest restore + pg_dump + pg_restore" \
  "$TIME_MANUAL" "$((RESTORED_MANUAL / 1048576))" "$([[ $GOT_MANUAL == "$EXPECTED" ]] && echo yes || echo NO)"
printf 'recover time, backstop / manual path:         %s   [<= 0.3]\n' "$(ratio "$TIME_BACKSTOP" "$TIME_MANUAL")"
sql "SELECT jsonb_pretty(result->'phases') FROM backstop.job_runs WHERE kind = 'table_recover' ORDER BY job_id DESC LIMIT 1" app | grep -E "phase|seconds" | paste - - | sed -E "s/ +/ /g" >&2
scripts/cluster.sh stop "$DIR/cluster" > /dev/null
