#!/usr/bin/env bash
# Incremental base backups on PostgreSQL 17, side by side: backstop with and without WAL summaries
# against PostgreSQL 17's own pg_basebackup --incremental (plain format, to a local directory) and
# pg_combinebackup for the restore; one cluster, one big table, the same change, one run.
#
#   setup        a table of BENCH_ROWS rows (default 50 M, about 4.4 GB with its primary key),
#                summarize_wal = on; a full backup by each (backstop, pg_basebackup -Fp)
#   each round   one change to 1 % of the rows, then
#                  backstop incremental, WAL summaries used
#                  pg_basebackup --incremental (on the previous pg_basebackup's backup_manifest)
#                  backstop incremental without summaries (backstop.base_backup_wal_summaries off
#                  for it; turning summarize_wal off and on again leaves a gap in the summaries), on
#                  the same previous backup: the one that used summaries is set aside meanwhile, and
#                  this one's manifest removed afterwards so the next round follows that one
#                backstop's backups run as run_job('base_backup', count_rows => false): the row
#                counts for the pitr drill are a scan pg_basebackup does not make
#                bytes read (backstop: its job's count; pg_basebackup: the walsender's read bytes,
#                /proc/PID/io rchar sampled every 50 ms, a lower bound), bytes stored, seconds
#   before each  a checkpoint, and the archiver idle (no .ready file): the round's WAL archived
#   timed backup before, not during, whichever backup is timed first
#   restore      after each round, rebuild a data directory: backstop restore of the incremental
#                that used summaries, against pg_combinebackup of the pg_basebackup chain (default
#                copy mode), with and without first copying the chain to the restoring host (the
#                issue's measure: "pg_combinebackup + copy"); twice in alternation, the better time
#                kept; no recovery run
#   rounds       "runs": 1 % of rows in runs of 100 (id % 10000 < 100), as batches of recent rows
#                change; "scattered": every hundredth row (id % 100 = 0), the worst case for
#                256 KiB chunks
#
#   bench/incremental_pg17.sh   (BENCH_ROWS=50000000; BENCH_SKIP_BUILD=1 reuses the installed build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export BACKSTOP_PG=17
source scripts/lib.sh

ROWS=${BENCH_ROWS:-50000000}
DIR=${BENCH_DIR:-/var/lib/backstop-bench17}
PORT=${BENCH_PORT:-5450}

ensure_debian_packages
ensure_postgres
[[ -n ${BENCH_SKIP_BUILD:-} ]] || BACKSTOP_PROFILE=release install_backstop

as_postgres() { runuser -u postgres -- "$@"; }
sql() { as_postgres "$PG_BIN/psql" -X -qAt -h "$DIR/cluster/run" -p "$PORT" -d postgres -c "$1"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
bytes_in() { du -sb "$@" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
best() { awk -v a="${1:-1e9}" -v b="$2" 'BEGIN { print (b < a ? b : a) }'; }
job() { sql "SELECT result->>'$1' FROM backstop.job_runs WHERE kind = 'base_backup' ORDER BY job_id DESC LIMIT 1"; }
summaries() { sql "ALTER SYSTEM SET backstop.base_backup_wal_summaries = $1" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null; sleep 1; }
# Before each timed backup: a checkpoint, then no WAL left for the archiver (its compressing and
# uploading the round's WAL would otherwise compete with whichever backup runs first).
settle() {
  sql "CHECKPOINT" >/dev/null
  for _ in $(seq 1 600); do
    [[ $(sql "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'") == 0 ]] && break
    sleep 0.2
  done
  sleep 1
}
backstop_backup() {
  local state
  state=$(sql "SELECT state || coalesce(': ' || error, '') FROM backstop.run_job('base_backup', '{\"kind\": \"$1\", \"count_rows\": false}')")
  [[ $state == succeeded ]] || { echo "backstop's $1 backup: $state" >&2; exit 1; }
}

scripts/cluster.sh stop "$DIR/cluster" 2>/dev/null || true
rm -rf "$DIR"
mkdir -p "$DIR/cluster" "$DIR/pgbb" "$DIR/aside"
chown -R postgres:postgres "$DIR"
REPO=file://$DIR/backstop
scripts/cluster.sh start "$DIR/cluster" "$PORT" "$REPO" "summarize_wal = on" "max_wal_size = '8GB'" \
  "checkpoint_timeout = '30min'" "maintenance_work_mem = '1GB'" "backstop.base_backup_parallel = 2"
sql "CREATE EXTENSION IF NOT EXISTS backstop" >/dev/null
CLUSTER=$(sql "SELECT system_identifier FROM pg_control_system()")
KEY=$(sql "SELECT backstop.repository_key()")

echo "== loading $ROWS rows" >&2
sql "CREATE TABLE big (id bigint NOT NULL, customer int NOT NULL, amount numeric NOT NULL, note text NOT NULL)"
sql "INSERT INTO big SELECT g, g % 100000, g * 0.01, md5(g::text) FROM generate_series(1, $ROWS) g"
sql "ALTER TABLE big ADD PRIMARY KEY (id)"
sql "VACUUM ANALYZE big" >/dev/null
sql "CHECKPOINT" >/dev/null
TABLE_BYTES=$(sql "SELECT pg_total_relation_size('big')")
sleep 3 # files written in the last 2 s are re-read by the next backup (README)

declare -A TIME READ STORED SAME
echo "== full backups" >&2
settle; t=$(now); backstop_backup full; TIME[backstop_full]=$(since "$t")
READ[backstop_full]=$(job bytes_read); STORED[backstop_full]=$(job bytes_stored)
settle; t=$(now); as_postgres "$PG_BIN/pg_basebackup" -h "$DIR/cluster/run" -p "$PORT" -D "$DIR/pgbb/full" -Fp -c fast -X none >/dev/null 2>&1
TIME[pgbb_full]=$(since "$t"); STORED[pgbb_full]=$(bytes_in "$DIR/pgbb/full"); READ[pgbb_full]=$(bytes_in "$DIR/pgbb/full")

# pg_basebackup --incremental, with the bytes its walsender read (sampled until it exits).
pgbb_incremental() {
  local name=$1 previous=$2 pid="" rchar=0 t
  settle
  t=$(now)
  as_postgres "$PG_BIN/pg_basebackup" -h "$DIR/cluster/run" -p "$PORT" -D "$DIR/pgbb/$name" -Fp -c fast -X none \
    --incremental="$DIR/pgbb/$previous/backup_manifest" >/dev/null 2>"$DIR/pgbb/$name.err" &
  local client=$!
  while kill -0 "$client" 2>/dev/null; do
    [[ -n $pid ]] || pid=$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender' LIMIT 1" 2>/dev/null || true)
    if [[ -n $pid && -r /proc/$pid/io ]]; then
      rchar=$(awk '/^rchar/ { print $2 }' "/proc/$pid/io" 2>/dev/null || echo "$rchar")
    fi
    sleep 0.05
  done
  wait "$client" || { cat "$DIR/pgbb/$name.err" >&2; exit 1; }
  TIME[pgbb_$name]=$(since "$t"); READ[pgbb_$name]=$rchar; STORED[pgbb_$name]=$(bytes_in "$DIR/pgbb/$name")
}

ROUNDS=(runs scattered)
declare -A CHANGE=([runs]="id % 10000 < 100" [scattered]="id % 100 = 0")
previous_pgbb=full
chain=("$DIR/pgbb/full")
for round in "${ROUNDS[@]}"; do
  echo "== round $round: UPDATE 1 % of the rows WHERE ${CHANGE[$round]}" >&2
  sql "UPDATE big SET amount = amount + 1 WHERE ${CHANGE[$round]}" >/dev/null
  sql "CHECKPOINT" >/dev/null
  sleep 3

  settle; t=$(now); backstop_backup incremental; TIME[backstop_$round]=$(since "$t")
  READ[backstop_$round]=$(job bytes_read); STORED[backstop_$round]=$(job bytes_stored)
  used=$(job changed_blocks); echo "   backstop: changed blocks: $used" >&2
  [[ $used == "WAL summaries"* ]] || { echo "the incremental did not use the WAL summaries" >&2; exit 1; }
  with_summaries=$(job backup_id)

  pgbb_incremental "$round" "$previous_pgbb"
  previous_pgbb=$round
  chain+=("$DIR/pgbb/$round")

  # The same change without summaries, on the same previous backup: the one above is set aside.
  mv "$DIR/backstop/$CLUSTER/backups/$with_summaries" "$DIR/aside/"
  summaries off
  settle; t=$(now); backstop_backup incremental; TIME[plain_$round]=$(since "$t")
  READ[plain_$round]=$(job bytes_read); STORED[plain_$round]=$(job bytes_stored)
  echo "   backstop without: $(job changed_blocks)" >&2
  rm -rf "$DIR/backstop/$CLUSTER/backups/$(job backup_id)"
  mv "$DIR/aside/$with_summaries" "$DIR/backstop/$CLUSTER/backups/"
  summaries on

  echo "== restores after round $round (twice each, alternating, best time kept)" >&2
  for attempt in 1 2; do
    rm -rf "$DIR/restore-backstop" "$DIR/restore-combined"; sync
    t=$(now)
    as_postgres backstop restore --repository "$REPO" --cluster "$CLUSTER" --trusted-key "$KEY" \
      --backup-id "$with_summaries" --target-dir "$DIR/restore-backstop" --immediate --pg-bin "$PG_BIN" >/dev/null
    TIME[restore_backstop_$round]=$(best "${TIME[restore_backstop_$round]:-}" "$(since "$t")")
    t=$(now)
    as_postgres "$PG_BIN/pg_combinebackup" -o "$DIR/restore-combined" "${chain[@]}"
    TIME[restore_combine_$round]=$(best "${TIME[restore_combine_$round]:-}" "$(since "$t")")
    # The issue's measure: pg_basebackup's chain first copied from where it is kept to the host
    # that restores (here: another local directory), then combined; backstop restores straight from
    # its repository.
    rm -rf "$DIR/staging" "$DIR/restore-copied"; mkdir -p "$DIR/staging"; chown postgres:postgres "$DIR/staging"; sync
    t=$(now)
    staged=()
    for backup in "${chain[@]}"; do
      cp -a "$backup" "$DIR/staging/"
      staged+=("$DIR/staging/$(basename "$backup")")
    done
    as_postgres "$PG_BIN/pg_combinebackup" -o "$DIR/restore-copied" "${staged[@]}"
    TIME[restore_copy_$round]=$(best "${TIME[restore_copy_$round]:-}" "$(since "$t")")
    rm -rf "$DIR/staging" "$DIR/restore-copied"
  done
  # Both rebuilt the big table's files from backups taken moments apart with no write between:
  # said, not required (a hint bit set in between would differ, harmlessly).
  node=$(sql "SELECT pg_relation_filepath('big')")
  SAME[$round]=identical
  for f in "$DIR/restore-combined/$node"*; do
    cmp -s "$f" "$DIR/restore-backstop/${f#"$DIR/restore-combined/"}" || SAME[$round]="differ in ${f##*/}"
  done
  rm -rf "$DIR/restore-backstop" "$DIR/restore-combined"
done
scripts/cluster.sh stop "$DIR/cluster"

printf '\nIncremental base backups on PostgreSQL %s: a table of %s rows (%s MB with its index), %s cores\n' \
  "$("$PG_BIN/postgres" --version | awk '{ print $3 }')" "$ROWS" "$(mb "$TABLE_BYTES")" "$(nproc)"
printf '%-44s %9s %10s %10s\n' "" seconds "MB read" "MB stored"
row() { printf '%-44s %9s %10s %10s\n' "$1" "${TIME[$2]}" "$(mb "${READ[$2]}")" "$(mb "${STORED[$2]}")"; }
row "backstop full" backstop_full
row "pg_basebackup -Fp full" pgbb_full
for round in "${ROUNDS[@]}"; do
  row "$round: backstop incremental, WAL summaries" "backstop_$round"
  row "$round: backstop incremental, no summaries" "plain_$round"
  row "$round: pg_basebackup --incremental" "pgbb_$round"
  printf '%-44s %9s\n' "$round: backstop restore" "${TIME[restore_backstop_$round]}"
  printf '%-44s %9s\n' "$round: pg_combinebackup (full + incrementals)" "${TIME[restore_combine_$round]}"
  printf '%-44s %9s\n' "$round: copy of the chain + pg_combinebackup" "${TIME[restore_copy_$round]}"
  printf '%-44s %s\n' "$round: the table's files in both restores" "${SAME[$round]}"
done
printf '\nratios (target in brackets):\n'
for round in "${ROUNDS[@]}"; do
  printf '%-10s incremental time, backstop (summaries) / pg_basebackup --incremental: %s  [<= 0.5]\n' \
    "$round" "$(ratio "${TIME[backstop_$round]}" "${TIME[pgbb_$round]}")"
  printf '%-10s incremental time, backstop without / with summaries:                 %s\n' \
    "$round" "$(ratio "${TIME[plain_$round]}" "${TIME[backstop_$round]}")"
  printf '%-10s restore time, backstop / (copy of the chain + pg_combinebackup):    %s  [< 1]\n' \
    "$round" "$(ratio "${TIME[restore_backstop_$round]}" "${TIME[restore_copy_$round]}")"
  printf '%-10s restore time, backstop / pg_combinebackup of a chain already local: %s\n' \
    "$round" "$(ratio "${TIME[restore_backstop_$round]}" "${TIME[restore_combine_$round]}")"
done
