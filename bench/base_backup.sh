#!/usr/bin/env bash
# Base backups, side by side: backstop against pgBackRest 2.45 (full / incr, zst level 3,
# process-max 2, --start-fast) and pg_basebackup -Ft -z, on one pgbench database, in one run, all
# into local directories on the same disk. Archiving feeds both repositories (one archive_command
# runs `backstop wal push` and `pgbackrest archive-push`), so each backup waits for its own WAL.
#
#   full         time, bytes stored, store requests (objects written)
#   incremental  after updating 1 % of pgbench_accounts (a contiguous range of aid, as recent rows
#                are): time, bytes stored by that backup, requests
#   restore      time to rebuild the data directory from the incremental backup (no recovery run),
#                each contender twice in alternation, the better time kept
#
#   bench/base_backup.sh     (BENCH_SCALE=200, about 3 GB; BENCH_SKIP_BUILD=1 reuses the installed build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

SCALE=${BENCH_SCALE:-200}
DIR=${BENCH_DIR:-/var/lib/backstop-bench}
PORT=${BENCH_PORT:-5440}

prepare_bench

as_postgres() { runuser -u postgres -- "$@"; }
sql() { as_postgres psql -X -qAt -h "$DIR/cluster/run" -p "$PORT" -d postgres -c "$1"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
bytes_in() { du -sb "$@" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
files_in() { find "$@" -type f 2>/dev/null | wc -l; }
pgbr() { as_postgres pgbackrest --config="$DIR/pgbackrest.conf" --stanza=bench "$@"; }

scripts/cluster.sh stop "$DIR/cluster" 2>/dev/null || true
rm -rf "$DIR"
mkdir -p "$DIR/cluster" "$DIR/pgbackrest" "$DIR/pgbackrest-spool" "$DIR/pgbackrest-lock" "$DIR/pgbackrest-log"
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
scripts/cluster.sh start "$DIR/cluster" "$PORT" "$REPO" "archive_library = ''" "archive_command = '$push'" \
  "max_wal_size = '8GB'" "checkpoint_timeout = '30min'" "backstop.base_backup_parallel = 2"
pgbr stanza-create > /dev/null
sql "CREATE EXTENSION IF NOT EXISTS backstop" > /dev/null

echo "== pgbench -i -s $SCALE" >&2
as_postgres pgbench -i -q -s "$SCALE" -h "$DIR/cluster/run" -p "$PORT" postgres > /dev/null 2>&1
sql "VACUUM ANALYZE" > /dev/null; sql "CHECKPOINT" > /dev/null
DB_BYTES=$(bytes_in "$DIR/cluster/pgdata/base" "$DIR/cluster/pgdata/global")
sleep 3 # files written in the last 2 s are re-read by the next incremental (README)

declare -A TIME BYTES REQUESTS
job_result() { sql "SELECT result->>'$1' FROM backstop.job_runs ORDER BY job_id DESC LIMIT 1"; }

echo "== full backups" >&2
t=$(now); sql "SELECT state FROM backstop.base_backup(kind => 'full')" > /dev/null; TIME[backstop_full]=$(since "$t")
BYTES[backstop_full]=$(bytes_in "$DIR/backstop"/*/packs "$DIR/backstop"/*/backups)
REQUESTS[backstop_full]=$(job_result requests)
t=$(now); pgbr backup --type=full > /dev/null; TIME[pgbackrest_full]=$(since "$t")
BYTES[pgbackrest_full]=$(bytes_in "$DIR/pgbackrest/backup")
REQUESTS[pgbackrest_full]=$(files_in "$DIR/pgbackrest/backup")
t=$(now); as_postgres pg_basebackup -h "$DIR/cluster/run" -p "$PORT" -D "$DIR/basebackup" -Ft -z -c fast -X none > /dev/null 2>&1
TIME[pg_basebackup_full]=$(since "$t")
BYTES[pg_basebackup_full]=$(bytes_in "$DIR/basebackup")
REQUESTS[pg_basebackup_full]=$(files_in "$DIR/basebackup")

echo "== 1 % of pgbench_accounts updated" >&2
sql "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $((SCALE * 1000))" > /dev/null
sql "CHECKPOINT" > /dev/null
sleep 3

echo "== incremental backups" >&2
before_b=$(bytes_in "$DIR/backstop"/*/packs "$DIR/backstop"/*/backups)
t=$(now); sql "SELECT state FROM backstop.base_backup(kind => 'incremental')" > /dev/null; TIME[backstop_incr]=$(since "$t")
BYTES[backstop_incr]=$(( $(bytes_in "$DIR/backstop"/*/packs "$DIR/backstop"/*/backups) - before_b ))
REQUESTS[backstop_incr]=$(job_result requests)
before_p=$(bytes_in "$DIR/pgbackrest/backup"); before_f=$(files_in "$DIR/pgbackrest/backup")
t=$(now); pgbr backup --type=incr > /dev/null; TIME[pgbackrest_incr]=$(since "$t")
BYTES[pgbackrest_incr]=$(( $(bytes_in "$DIR/pgbackrest/backup") - before_p ))
REQUESTS[pgbackrest_incr]=$(( $(files_in "$DIR/pgbackrest/backup") - before_f ))

echo "== restores of the incremental backups (each twice, alternating, best time kept)" >&2
CLUSTER=$(sql "SELECT system_identifier FROM pg_control_system()")
# The public key from the recovery kit: what a DBA passes to a restore on a recovery host.
KEY=$(sql "SELECT backstop.repository_key()")
best() { awk -v a="${1:-1e9}" -v b="$2" 'BEGIN { print (b < a ? b : a) }'; }
mkdir -p "$DIR/restore-basebackup"; chown postgres "$DIR/restore-basebackup"
for round in 1 2; do
  rm -rf "$DIR/restore-backstop" "$DIR/restore-pgbackrest" "$DIR/restore-basebackup"/*; sync
  t=$(now); as_postgres backstop restore --repository "$REPO" --cluster "$CLUSTER" --trusted-key "$KEY" --target-dir "$DIR/restore-backstop" --immediate > /dev/null
  TIME[backstop_restore]=$(best "${TIME[backstop_restore]:-}" "$(since "$t")")
  t=$(now); pgbr restore --pg1-path="$DIR/restore-pgbackrest" --type=immediate > /dev/null
  TIME[pgbackrest_restore]=$(best "${TIME[pgbackrest_restore]:-}" "$(since "$t")")
  t=$(now); as_postgres tar -xzf "$DIR/basebackup/base.tar.gz" -C "$DIR/restore-basebackup"
  TIME[pg_basebackup_restore]=$(best "${TIME[pg_basebackup_restore]:-}" "$(since "$t")")
done
scripts/cluster.sh stop "$DIR/cluster"

mb() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '\nBase backups of pgbench scale %s (%s MB of relations), local directories, %s cores\n' "$SCALE" "$(mb "$DB_BYTES")" "$(nproc)"
printf '%-28s %10s %12s %10s\n' "" seconds "MB stored" requests
for row in backstop_full pgbackrest_full pg_basebackup_full backstop_incr pgbackrest_incr; do
  printf '%-28s %10s %12s %10s\n' "$row" "${TIME[$row]}" "$(mb "${BYTES[$row]}")" "${REQUESTS[$row]}"
done
for row in backstop_restore pgbackrest_restore pg_basebackup_restore; do
  printf '%-28s %10s\n' "$row" "${TIME[$row]}"
done
printf '\nratios (target in brackets):\n'
printf 'full throughput, backstop / pgBackRest:        %sx  [>= 1.5]\n' "$(ratio "${TIME[pgbackrest_full]}" "${TIME[backstop_full]}")"
printf 'full throughput, backstop / pg_basebackup:     %sx\n' "$(ratio "${TIME[pg_basebackup_full]}" "${TIME[backstop_full]}")"
printf 'incremental time, backstop / pgBackRest:       %s   [<= 0.5]\n' "$(ratio "${TIME[backstop_incr]}" "${TIME[pgbackrest_incr]}")"
printf 'incremental bytes, backstop / pgBackRest:      %s   [<= 1]\n' "$(ratio "${BYTES[backstop_incr]}" "${BYTES[pgbackrest_incr]}")"
printf 'restore time, backstop / pgBackRest:           %s   [<= 1]\n' "$(ratio "${TIME[backstop_restore]}" "${TIME[pgbackrest_restore]}")"
