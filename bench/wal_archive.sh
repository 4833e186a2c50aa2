#!/usr/bin/env bash
# WAL archiving, side by side: backstop (archive_library) against pgBackRest 2.45 archive-push, plain
# and async, on the same machine, the same WAL, in one run. Both write to a local directory
# repository with zstd level 3, so the comparison is archiving machinery, not compression settings.
#
# Two measurements per contender, each on a fresh cluster:
#   drain  N segments are written while archiving is switched off, then archiving is switched on:
#          segments per second until pg_wal is empty (pure archiving throughput).
#   burst  N segments are written as fast as PostgreSQL can with archiving on: how many finished
#          segments wait in pg_wal (the archiver's lag), sampled every 0.2 s, and how long the
#          archive needs after the burst to catch up.
#
#   bench/wal_archive.sh            (BENCH_SEGMENTS=64, BENCH_SKIP_BUILD=1 to reuse the installed build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

SEGMENTS=${BENCH_SEGMENTS:-64}
DIR=${BENCH_DIR:-/var/lib/backstop-bench}
PORT=${BENCH_PORT:-5440}

prepare_bench

as_postgres() { runuser -u postgres -- "$@"; }
sql() { as_postgres psql -X -qAt -h "$DIR/cluster/run" -p "$PORT" -d postgres -c "$1"; }
ready_count() { ls "$DIR/cluster/pgdata/pg_wal/archive_status" 2>/dev/null | grep -c '\.ready$' || true; }
now() { date +%s.%N; }

pgbackrest_conf() {
  local async=$1
  cat > "$DIR/pgbackrest.conf" <<CONF
[global]
repo1-path=$DIR/repository-pgbackrest
compress-type=zst
compress-level=3
archive-async=$async
process-max=2
spool-path=$DIR/pgbackrest-spool
lock-path=$DIR/pgbackrest-lock
log-path=$DIR/pgbackrest-log
log-level-console=warn
log-level-file=off
start-fast=y

[bench]
pg1-path=$DIR/cluster/pgdata
pg1-socket-path=$DIR/cluster/run
pg1-port=$PORT
CONF
  chown postgres:postgres "$DIR/pgbackrest.conf"
}

# Starts a fresh cluster archiving with the given contender; archiving on or off.
start_cluster() {
  local contender=$1 archiving=$2
  scripts/cluster.sh stop "$DIR/cluster" 2>/dev/null || true
  rm -rf "$DIR/cluster" "$DIR"/repository-* "$DIR"/pgbackrest-*
  mkdir -p "$DIR/cluster" "$DIR/pgbackrest-spool" "$DIR/pgbackrest-lock" "$DIR/pgbackrest-log" "$DIR/repository-pgbackrest"
  chown -R postgres:postgres "$DIR"
  local settings=("max_wal_size = '8GB'" "checkpoint_timeout = '30min'" "wal_keep_size = 0")
  case $contender in
    backstop) settings+=("backstop.archive_lookahead = ${BENCH_LOOKAHEAD:-4}") ;;
    backstop-serial) settings+=("backstop.archive_lookahead = 0") ;;
    pgbackrest*)
      settings+=("archive_library = ''" "archive_command = 'pgbackrest --config=$DIR/pgbackrest.conf --stanza=bench archive-push %p'")
      pgbackrest_conf "$([[ $contender == pgbackrest-async ]] && echo y || echo n)"
      ;;
  esac
  [[ $archiving == off ]] && settings+=("archive_library = ''" "archive_command = ''")
  scripts/cluster.sh start "$DIR/cluster" "$PORT" "file://$DIR/repository-backstop" "${settings[@]}"
  if [[ $contender == pgbackrest* ]]; then
    as_postgres pgbackrest --config="$DIR/pgbackrest.conf" --stanza=bench stanza-create >/dev/null
  fi
  sql "CREATE EXTENSION IF NOT EXISTS backstop; CREATE TABLE load (id bigint, payload text)"
}

# Writes N segments' worth of WAL with hard-to-compress rows, switching after each.
write_segments() {
  sql "DO \$\$ BEGIN FOR i IN 1..$1 LOOP
         INSERT INTO load SELECT g, md5(random()::text) || md5(random()::text) || md5(random()::text)
           FROM generate_series(1, 70000) g;
         PERFORM pg_switch_wal();
       END LOOP; END \$\$"
}

wait_until_drained() {
  while [[ $(ready_count) -gt 0 ]]; do sleep 0.05; done
}

enable_archiving() {
  local contender=$1
  local conf=$DIR/cluster/pgdata/backstop.conf
  # Drop the two "off" lines appended last; the contender's own archive settings remain.
  head -n -2 "$conf" > "$conf.new" && mv "$conf.new" "$conf" && chown postgres:postgres "$conf"
  sql "SELECT pg_reload_conf()" >/dev/null
}

declare -A DRAIN BURST_MAX BURST_AVG CATCHUP
read -r -a CONTENDERS <<< "${BENCH_CONTENDERS:-backstop backstop-serial pgbackrest pgbackrest-async}"

for contender in "${CONTENDERS[@]}"; do
  echo "== $contender: drain $SEGMENTS segments" >&2
  start_cluster "$contender" off
  write_segments "$SEGMENTS"
  waiting=$(ready_count)
  started=$(now)
  enable_archiving "$contender"
  wait_until_drained
  DRAIN[$contender]=$(awk -v n="$waiting" -v a="$started" -v b="$(now)" 'BEGIN { print n / (b - a) }')

  echo "== $contender: burst of $SEGMENTS segments" >&2
  start_cluster "$contender" on
  samples=$DIR/samples
  : > "$samples"
  ( while true; do ready_count >> "$samples"; sleep 0.2; done ) &
  sampler=$!
  write_segments "$SEGMENTS"
  burst_end=$(now)
  wait_until_drained
  CATCHUP[$contender]=$(awk -v a="$burst_end" -v b="$(now)" 'BEGIN { print b - a }')
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  BURST_MAX[$contender]=$(sort -n "$samples" | tail -1)
  BURST_AVG[$contender]=$(awk '{ s += $1 } END { printf "%.1f", s / NR }' "$samples")
  scripts/cluster.sh stop "$DIR/cluster"
done

printf '\nWAL archiving, %s segments of 16 MiB, local repository, zstd level 3 (%s)\n' "$SEGMENTS" "$(nproc) cores"
printf '%-18s %14s %18s %16s %16s\n' contender "drain seg/s" "burst max waiting" "burst avg waiting" "catch-up s"
for contender in "${CONTENDERS[@]}"; do
  printf '%-18s %14.1f %18s %16s %16.2f\n' "$contender" "${DRAIN[$contender]}" "${BURST_MAX[$contender]}" \
    "${BURST_AVG[$contender]}" "${CATCHUP[$contender]}"
done
printf '\nratios (backstop / peer, segments per second when draining):\n'
for peer in pgbackrest pgbackrest-async; do
  [[ -n ${DRAIN[$peer]:-} && -n ${DRAIN[backstop]:-} ]] || continue
  printf '  backstop vs %-17s %.2fx\n' "$peer:" "$(awk -v a="${DRAIN[backstop]}" -v b="${DRAIN[$peer]}" 'BEGIN { print a / b }')"
done
