#!/usr/bin/env bash
# One table, side by side: backstop.snapshot_table / backstop.restore_table against pg_dump -Fc /
# pg_restore and COPY ... (FORMAT binary) to and from a server-side file, on the same machine, the
# same table and in one run, so every ratio compares numbers measured together.
#
# The table (bench_orders, BENCH_ROWS rows) mixes the types a DBA meets every day: bigint, int,
# numeric, float8, text of varying length (some NULL), timestamptz, date, bool, uuid, jsonb and
# int[], filled with random() and md5() so that it does not compress trivially. It is vacuumed,
# frozen and checkpointed before the first measurement, so no contender pays for hint bits.
#
#   snapshot  seconds, bytes stored, peak private memory (RssAnon, sampled every 0.1 s) of the
#             backend doing the work and, for pg_dump, of the client
#   restore   seconds into a new table (backstop: bench_orders_restored; pg_restore: database
#             bench_restore; COPY: bench_orders_copy, created LIKE bench_orders INCLUDING ALL), the
#             same memory figures, and a check that every restored row matches the original
#
#   bench/table_snapshot.sh   (BENCH_ROWS=3000000, BENCH_SKIP_BUILD=1 to reuse the installed build,
#                              BENCH_CONTENDERS="backstop pg_dump copy" to run only some of them)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

ROWS=${BENCH_ROWS:-3000000}
DIR=${BENCH_DIR:-/var/lib/backstop-bench/snapshot}
PORT=${BENCH_PORT:-5441}
read -r -a CONTENDERS <<< "${BENCH_CONTENDERS:-backstop pg_dump copy}"
for contender in "${CONTENDERS[@]}"; do
  case $contender in
    backstop | pg_dump | copy) ;;
    *) echo "unknown contender '$contender' in BENCH_CONTENDERS (known: backstop pg_dump copy)" >&2; exit 2 ;;
  esac
done
wants() { [[ " ${CONTENDERS[*]} " == *" $1 "* ]]; }

ensure_debian_packages
[[ -x /usr/bin/time ]] || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
  BACKSTOP_PROFILE=release install_backstop
fi

DATA=$DIR/cluster/pgdata
RUN=$DIR/cluster/run
REPOSITORY=$DIR/repository
OUT=$DIR/out
DUMP=$OUT/bench_orders.dump
COPY_FILE=$OUT/bench_orders.copy
SAMPLER=

as_postgres() { runuser -u postgres -- "$@"; }
conninfo() { echo "host=$RUN port=$PORT dbname=${2:-postgres} application_name=$1"; }
sql() { as_postgres env PGOPTIONS='-c client_min_messages=warning' "$PG_BIN/psql" -X -qAt -v ON_ERROR_STOP=1 -d "$(conninfo bench_setup "${2:-postgres}")" -c "$1"; }
now() { date +%s.%N; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
cluster_running() { [[ -f $DATA/PG_VERSION ]] && as_postgres "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }
stop_cluster() { if cluster_running; then as_postgres "$PG_BIN/pg_ctl" -D "$DATA" -w stop -m fast >/dev/null; fi; }

# Samples RssAnon of the backend whose application_name is $1 every 0.1 s, in kB, one line per
# sample into $2. RssAnon leaves out shared buffers, which RSS would count as soon as they are
# touched: what remains is the memory the operation itself asked for.
start_sampler() {
  local app=$1 samples=$2
  : > "$samples"
  (
    pid=
    while true; do
      [[ -n $pid ]] || pid=$(sql "SELECT pid FROM pg_stat_activity WHERE application_name = '$app' LIMIT 1" 2>/dev/null || true)
      if [[ -n $pid ]]; then awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" >> "$samples" 2>/dev/null || true; fi
      sleep 0.1
    done
  ) &
  SAMPLER=$!
}
stop_sampler() {
  [[ -n $SAMPLER ]] || return 0
  kill "$SAMPLER" 2>/dev/null || true
  wait "$SAMPLER" 2>/dev/null || true
  SAMPLER=
}
peak_mb() { awk 'm < $1 { m = $1 } END { if (NR) printf "%.1f", m / 1024; else print "n/a" }' "$1"; }

cleanup() { stop_sampler; stop_cluster; }
trap cleanup EXIT

# Runs one statement in its own session named $1 and sets RESULT (its first output line), ELAPSED
# (seconds, from psql's \timing, so connection set-up is not counted) and PEAK (backend MB). A
# 0.3 s pause before the statement, not timed, lets the sampler find the backend first.
timed_sql() {
  local app=$1 statement=$2
  start_sampler "$app" "$OUT/$app.rss"
  as_postgres "$PG_BIN/psql" -X -qAt -v ON_ERROR_STOP=1 -d "$(conninfo "$app")" \
    -c "SELECT pg_sleep(0.3)" -c '\timing on' -c "$statement" > "$OUT/$app.out"
  stop_sampler
  ELAPSED=$(awk '/^Time: / { printf "%.3f", $2 / 1000 }' "$OUT/$app.out")
  RESULT=$(grep -v -e '^Time: ' -e '^$' "$OUT/$app.out" | head -1 || true)
  PEAK=$(peak_mb "$OUT/$app.rss")
}

# Runs a client program (pg_dump, pg_restore) whose connection is named $1 and sets ELAPSED (wall
# clock), PEAK (its backend, MB) and CLIENT_PEAK (the program's own maximum RSS, MB).
timed_client() {
  local app=$1
  shift
  start_sampler "$app" "$OUT/$app.rss"
  local started
  started=$(now)
  as_postgres /usr/bin/time -f %M -o "$OUT/$app.client" "$@"
  ELAPSED=$(awk -v a="$started" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
  stop_sampler
  PEAK=$(peak_mb "$OUT/$app.rss")
  CLIENT_PEAK=$(tail -1 "$OUT/$app.client" | awk '{ printf "%.1f", $1 / 1024 }')
}

# "rows checksum" of a table: an order-independent hash over the text of every row.
fingerprint() { sql "SELECT count(*) || ' ' || coalesce(sum(hashtext(t::text)::bigint), 0) FROM $1 t" "${2:-postgres}"; }
index_count() { sql "SELECT count(*) FROM pg_index WHERE indrelid = '$1'::regclass" "${2:-postgres}"; }

step "fresh cluster in $DIR/cluster (port $PORT)"
stop_cluster
rm -rf "$DIR/cluster" "$REPOSITORY" "$OUT" "$DIR/results.txt"
mkdir -p "$RUN" "$REPOSITORY" "$OUT"
chown -R postgres:postgres "$DIR"
as_postgres "$PG_BIN/initdb" -D "$DATA" --auth=trust --locale=C.UTF-8 --encoding=UTF8 >/dev/null
cat >> "$DATA/postgresql.conf" <<CONF

# written by bench/table_snapshot.sh
port = $PORT
listen_addresses = ''
unix_socket_directories = '$RUN'
shared_preload_libraries = 'backstop'
backstop.repository = 'file://$REPOSITORY'
archive_mode = off
max_wal_size = '8GB'
checkpoint_timeout = '30min'
CONF
as_postgres "$PG_BIN/pg_ctl" -D "$DATA" -l "$DIR/cluster/server.log" -w start >/dev/null
sql "CREATE EXTENSION backstop" >/dev/null
if wants backstop; then
  for function in snapshot_table restore_table; do
    if [[ $(sql "SELECT count(*) FROM pg_proc WHERE pronamespace = 'backstop'::regnamespace AND proname = '$function'") == 0 ]]; then
      echo "the installed backstop has no backstop.$function(): build it (without BENCH_SKIP_BUILD) or leave backstop out of BENCH_CONTENDERS" >&2
      exit 1
    fi
  done
fi

step "filling bench_orders with $ROWS rows"
started=$(now)
sql "CREATE TABLE bench_orders (
       id bigint NOT NULL, customer int NOT NULL, amount numeric(12,2) NOT NULL, price float8,
       status text NOT NULL, note text, created timestamptz NOT NULL, day date NOT NULL, flag bool,
       ref uuid NOT NULL, payload jsonb, tags int[])"
sql "INSERT INTO bench_orders
     SELECT g,
            (random() * 100000)::int,
            round((random() * 10000)::numeric, 2),
            random() * 1000,
            (ARRAY['new', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded'])[1 + floor(random() * 6)::int],
            CASE WHEN random() < 0.05 THEN NULL
                 ELSE substr(md5(random()::text) || ' ' || md5(random()::text) || ' ' || md5(random()::text) || ' '
                             || md5(random()::text) || ' ' || md5(random()::text) || ' ' || md5(random()::text) || ' '
                             || md5(random()::text), 1, 10 + floor(random() * 191)::int) END,
            timestamptz '2020-01-01 00:00:00+00' + random() * interval '1460 days',
            date '2020-01-01' + floor(random() * 1460)::int,
            random() < 0.5,
            gen_random_uuid(),
            jsonb_build_object('sku', 'SKU-' || lpad(floor(random() * 100000)::int::text, 5, '0'),
                               'qty', 1 + floor(random() * 10)::int,
                               'channel', (ARRAY['web', 'store', 'phone', 'partner'])[1 + floor(random() * 4)::int],
                               'discount', round((random() * 0.3)::numeric, 3),
                               'ref', md5(g::text)),
            (ARRAY[floor(random() * 1000)::int, floor(random() * 1000)::int, floor(random() * 1000)::int,
                   floor(random() * 1000)::int, floor(random() * 1000)::int])[1:(g % 6)::int]
       FROM generate_series(1, $ROWS) g"
sql "ALTER TABLE bench_orders ADD PRIMARY KEY (id)"
sql "VACUUM (FREEZE, ANALYZE) bench_orders"
sql "CHECKPOINT"
TABLE_BYTES=$(sql "SELECT pg_table_size('bench_orders')")
INDEX_BYTES=$(sql "SELECT pg_indexes_size('bench_orders')")
ORIGINAL=$(fingerprint bench_orders)
printf 'filled in %.1f s: table %s MB, index %s MB\n' "$(awk -v a="$started" -v b="$(now)" 'BEGIN { print b - a }')" \
  "$(mb "$TABLE_BYTES")" "$(mb "$INDEX_BYTES")"

declare -A SNAP_S SNAP_BYTES SNAP_PEAK SNAP_CLIENT REST_S REST_PEAK REST_CLIENT REST_ROWS REST_INDEXES REST_MATCH

# Restored rows: count, whether every row matches the original, and how many indexes came back.
check_restored() {
  local contender=$1 table=$2 database=${3:-postgres} print
  print=$(fingerprint "$table" "$database")
  REST_ROWS[$contender]=${print%% *}
  REST_MATCH[$contender]=$([[ $print == "$ORIGINAL" ]] && echo yes || echo NO)
  REST_INDEXES[$contender]=$(index_count "$table" "$database")
}

if wants backstop; then
  step "backstop: snapshot_table"
  sql "CHECKPOINT"
  before=$(du -sb "$REPOSITORY" | cut -f1)
  timed_sql bench_backstop_snapshot "SELECT backstop.snapshot_table('bench_orders')"
  SNAPSHOT_ID=$RESULT
  SNAP_S[backstop]=$ELAPSED SNAP_PEAK[backstop]=$PEAK SNAP_CLIENT[backstop]=-
  SNAP_BYTES[backstop]=$(($(du -sb "$REPOSITORY" | cut -f1) - before))
  echo "snapshot $SNAPSHOT_ID: ${ELAPSED} s, $(mb "${SNAP_BYTES[backstop]}") MB stored"
  find "$REPOSITORY" -path "*/$SNAPSHOT_ID/*" -type f -printf '  %P  %s bytes\n'

  step "backstop: restore_table"
  sql "DROP TABLE IF EXISTS bench_orders_restored"
  sql "CHECKPOINT"
  timed_sql bench_backstop_restore \
    "SELECT backstop.restore_table('bench_orders', target_table => 'bench_orders_restored')"
  REST_S[backstop]=$ELAPSED REST_PEAK[backstop]=$PEAK REST_CLIENT[backstop]=-
  check_restored backstop bench_orders_restored
  [[ $RESULT == "${REST_ROWS[backstop]}" ]] ||
    echo "warning: restore_table returned '$RESULT' but bench_orders_restored holds ${REST_ROWS[backstop]} rows" >&2
  echo "restored ${REST_ROWS[backstop]} rows in ${ELAPSED} s"
fi

if wants pg_dump; then
  step "pg_dump -Fc -t bench_orders"
  sql "CHECKPOINT"
  timed_client bench_pg_dump "$PG_BIN/pg_dump" -Fc -t bench_orders -f "$DUMP" -d "$(conninfo bench_pg_dump)"
  SNAP_S[pg_dump]=$ELAPSED SNAP_PEAK[pg_dump]=$PEAK SNAP_CLIENT[pg_dump]=$CLIENT_PEAK
  SNAP_BYTES[pg_dump]=$(stat -c %s "$DUMP")
  echo "dump: ${ELAPSED} s, $(mb "${SNAP_BYTES[pg_dump]}") MB"

  step "pg_restore into a new database bench_restore"
  as_postgres "$PG_BIN/createdb" -h "$RUN" -p "$PORT" bench_restore
  sql "CHECKPOINT"
  timed_client bench_pg_restore "$PG_BIN/pg_restore" -d "$(conninfo bench_pg_restore bench_restore)" "$DUMP"
  REST_S[pg_dump]=$ELAPSED REST_PEAK[pg_dump]=$PEAK REST_CLIENT[pg_dump]=$CLIENT_PEAK
  check_restored pg_dump bench_orders bench_restore
  echo "restored ${REST_ROWS[pg_dump]} rows in ${ELAPSED} s"
fi

if wants copy; then
  step "COPY bench_orders TO a server-side file (FORMAT binary)"
  sql "CHECKPOINT"
  timed_sql bench_copy_to "COPY bench_orders TO '$COPY_FILE' (FORMAT binary)"
  SNAP_S[copy]=$ELAPSED SNAP_PEAK[copy]=$PEAK SNAP_CLIENT[copy]=-
  SNAP_BYTES[copy]=$(stat -c %s "$COPY_FILE")
  echo "copy: ${ELAPSED} s, $(mb "${SNAP_BYTES[copy]}") MB"

  step "COPY bench_orders_copy FROM the file (FORMAT binary)"
  sql "DROP TABLE IF EXISTS bench_orders_copy; CREATE TABLE bench_orders_copy (LIKE bench_orders INCLUDING ALL)"
  sql "CHECKPOINT"
  timed_sql bench_copy_from "COPY bench_orders_copy FROM '$COPY_FILE' (FORMAT binary)"
  REST_S[copy]=$ELAPSED REST_PEAK[copy]=$PEAK REST_CLIENT[copy]=-
  check_restored copy bench_orders_copy
  echo "restored ${REST_ROWS[copy]} rows in ${ELAPSED} s"
fi

stop_cluster

declare -A SNAP_LABEL=([backstop]="backstop snapshot" [pg_dump]="pg_dump -Fc" [copy]="COPY TO (binary)")
declare -A REST_LABEL=([backstop]="backstop restore" [pg_dump]="pg_restore" [copy]="COPY FROM (binary)")
declare -A PEER_LABEL=([pg_dump]="pg_dump / pg_restore" [copy]="COPY binary")
ratio() { # peer / backstop, or n/a when either side did not run
  [[ -n ${1:-} && -n ${2:-} ]] || { echo n/a; return; }
  awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'
}

{
  printf '\nOne table, %s rows: table %s MB + primary key %s MB on disk (%s cores, PostgreSQL %s)\n' \
    "$ROWS" "$(mb "$TABLE_BYTES")" "$(mb "$INDEX_BYTES")" "$(nproc)" "$PG_MAJOR"
  printf 'peak MB = most private memory (RssAnon) of the server backend doing the work; client = pg_dump / pg_restore itself\n'

  printf '\n%-20s %10s %12s %16s %16s\n' snapshot seconds "MB stored" "backend peak MB" "client peak MB"
  for contender in "${CONTENDERS[@]}"; do
    printf '%-20s %10.2f %12s %16s %16s\n' "${SNAP_LABEL[$contender]}" "${SNAP_S[$contender]}" \
      "$(mb "${SNAP_BYTES[$contender]}")" "${SNAP_PEAK[$contender]}" "${SNAP_CLIENT[$contender]}"
  done

  printf '\n%-20s %10s %12s %16s %16s %8s %9s\n' restore seconds rows "backend peak MB" "client peak MB" indexes "rows match"
  for contender in "${CONTENDERS[@]}"; do
    printf '%-20s %10.2f %12s %16s %16s %8s %9s\n' "${REST_LABEL[$contender]}" "${REST_S[$contender]}" \
      "${REST_ROWS[$contender]}" "${REST_PEAK[$contender]}" "${REST_CLIENT[$contender]}" \
      "${REST_INDEXES[$contender]}" "${REST_MATCH[$contender]}"
  done

  if wants backstop; then
    printf '\nratios, peer / backstop (above 1: backstop is faster or smaller):\n'
    printf '%-20s %14s %14s %14s\n' "" "snapshot time" "bytes stored" "restore time"
    for peer in pg_dump copy; do
      wants "$peer" || continue
      printf '%-20s %14s %14s %14s\n' "${PEER_LABEL[$peer]}" "$(ratio "${SNAP_S[$peer]}" "${SNAP_S[backstop]}")" \
        "$(ratio "${SNAP_BYTES[$peer]}" "${SNAP_BYTES[backstop]}")" "$(ratio "${REST_S[$peer]}" "${REST_S[backstop]}")"
    done
  fi
  if wants pg_dump && wants copy; then
    printf '\npg_dump -Fc / COPY binary: snapshot time %s, bytes %s, restore time %s\n' \
      "$(ratio "${SNAP_S[pg_dump]}" "${SNAP_S[copy]}")" "$(ratio "${SNAP_BYTES[pg_dump]}" "${SNAP_BYTES[copy]}")" \
      "$(ratio "${REST_S[pg_dump]}" "${REST_S[copy]}")"
  fi
  printf '\npg_dump -Fc compresses with gzip at its default level; COPY binary is uncompressed; backstop writes Parquet (zstd).\n'
  printf 'pg_restore builds the primary key after loading; COPY FROM fills a table whose primary key exists already.\n'
} | tee "$DIR/results.txt"
