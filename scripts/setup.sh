#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs backstop's main job against the embedded default
# (a file:// repository): installs what is missing, builds and installs the extension and CLI,
# starts a PostgreSQL cluster (Debian's 15; BACKSTOP_PG=16, 17 or 18 for another version) with backstop preloaded, creates the extension and asks doctor.
# Safe to run again: installed pieces are skipped, the cluster is restarted on the new build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

# BACKSTOP_PG=16, 17 or 18 runs the same demo on that version (see scripts/lib.sh), in a
# directory and on a port of its own.
if [[ $PG_MAJOR == 15 ]]; then
  DEMO_DIR=${BACKSTOP_DEMO_DIR:-/var/lib/backstop-demo}
else
  DEMO_DIR=${BACKSTOP_DEMO_DIR:-/var/lib/backstop-demo-pg$PG_MAJOR}
fi
DEMO_PORT=${BACKSTOP_DEMO_PORT:-$((5433 + (PG_MAJOR - 15) * 100))}
DEMO_REPOSITORY=file://$DEMO_DIR/repository

trap stage_times EXIT
step "installing what is missing (Debian packages; the machine's Rust toolchain is checked)"
# Garage (S3 on loopback) and cargo-pgrx (which runs the extension tests) are for the test suite
# only: the demo's repository is a local directory, and crates/install installs the extension.
ensure_postgres
ensure_rust
install_backstop

# Objects are encrypted to an age public key. In production the identity (secret key) lives away
# from the server; the demo keeps it next to the repository, readable by root only.
IDENTITY_FILE=$DEMO_DIR/backup-identity.txt
if [[ ! -s $IDENTITY_FILE ]]; then
  mkdir -p "$DEMO_DIR"
  (umask 077 && backstop keygen > "$IDENTITY_FILE")
fi
RECIPIENT=$(sed -n 's/^# public key: //p' "$IDENTITY_FILE")

step "starting PostgreSQL $PG_MAJOR with backstop (port $DEMO_PORT, data in $DEMO_DIR/pgdata)"
# The server reads the identity only to restore encrypted snapshots; it must be able to open it.
chown postgres:postgres "$IDENTITY_FILE"
# PostgreSQL 17+ summarizes WAL, so incrementals read only the blocks that changed.
summaries=()
((PG_MAJOR >= 17)) && summaries=("summarize_wal = on")
scripts/cluster.sh start "$DEMO_DIR" "$DEMO_PORT" "$DEMO_REPOSITORY" "backstop.encryption_recipients = '$RECIPIENT'" \
  "backstop.encryption_identity_file = '$IDENTITY_FILE'" "${summaries[@]}"

step "main job: CREATE EXTENSION backstop, a base backup, doctor, a table snapshot and its guided recovery, then schedules, a logical backup and restore drills"
scripts/cluster.sh psql "$DEMO_DIR" "$DEMO_PORT" -d postgres -v ON_ERROR_STOP=1 <<'SQL'
-- The extension owns data (restores, schedules, job history): a second run keeps it and updates the
-- extension to the installed version instead of recreating it. The demo's own schedules from an
-- earlier run are replaced below.
CREATE EXTENSION IF NOT EXISTS backstop;
ALTER EXTENSION backstop UPDATE;
SELECT extversion AS backstop_version FROM pg_extension WHERE extname = 'backstop';
-- Every object backstop writes is signed with this cluster's key (kept in the data directory);
-- anything in the repository it did not sign is refused. A repository an earlier backstop wrote
-- is vouched for once (on a fresh demo there is nothing to adopt).
SELECT backstop.repository_key() AS public_key_for_the_recovery_kit;
SELECT adopted, refused FROM backstop.adopt_repository();
SELECT backstop.unschedule(name) AS replaced_earlier_schedule FROM backstop.schedules
 WHERE name IN ('nightly-base', 'nightly-orders', 'drill-snapshot', 'drill-wal', 'retention', 'nightly-dump', 'drill-dump');
SELECT pg_switch_wal() IS NOT NULL AS switched_wal;
SELECT pg_sleep(2);
-- A base backup, in a background worker of its own; this session only waits and prints progress.
SELECT * FROM backstop.base_backup();
SELECT backup_id, kind, stop_time, bytes, bytes_new, bytes_stored, verified FROM backstop.backups();
SELECT timeline, status, from_time, to_time FROM backstop.recovery_window();
\x auto
SELECT "check", status, detail, hint FROM backstop.doctor();
SELECT backstop.doctor_report() ->> 'verdict' AS verdict, backstop.doctor_report() ->> 'reason' AS reason;
SELECT * FROM backstop.archive_status;
\x off
-- A table snapshot, an accident, and the guided recovery.
DROP TABLE IF EXISTS demo_orders, demo_orders_recovered, demo_orders_before_delete;
CREATE TABLE demo_orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2), placed timestamptz);
INSERT INTO demo_orders SELECT g, 'customer ' || g % 100, g * 1.25, now() - g * interval '1 hour'
  FROM generate_series(1, 10000) g;
SELECT backstop.snapshot_table('demo_orders') AS snapshot_id;
DELETE FROM demo_orders WHERE id % 3 = 0;
-- "When did it happen?": the DELETE, read from the WAL, with the recovery target that undoes it.
SELECT commit_time, xid, inserted, deleted, target_lsn FROM backstop.table_history('demo_orders', max_rows => 3);
SELECT strategy, description FROM backstop.recover('demo_orders');
SELECT sql FROM backstop.copyback_plan('demo_orders_recovered') WHERE strategy = 'insert_missing' \gexec
SELECT count(*) AS demo_orders_after_recovery FROM demo_orders;
-- An incremental base backup after those changes stores only what changed; on PostgreSQL 17+
-- (summarize_wal on) it reads only the changed blocks, and changed_blocks says where they came from.
SELECT state, result ->> 'kind' AS kind, result ->> 'changed_blocks' AS changed_blocks,
       result ->> 'bytes_read' AS bytes_read, result ->> 'bytes_skipped' AS bytes_not_read,
       result ->> 'bytes_new' AS bytes_new, result -> 'phases' AS seconds_per_phase
  FROM backstop.run_job('base_backup', '{"kind": "incremental"}');
-- The habits, scheduled (the scheduler worker runs them; backstop.database is this database): a
-- nightly base backup and snapshot, daily restore drills, and retention (grandfather-father-son).
SELECT * FROM backstop.schedule('nightly-base', '0 1 * * *', 'base_backup');
SELECT * FROM backstop.schedule('nightly-orders', '30 1 * * *', 'snapshot', '{"tables": ["public.demo_orders"]}');
SELECT * FROM backstop.schedule('drill-snapshot', '0 4 * * *', 'snapshot_restore', '{"table": "public.demo_orders"}');
SELECT * FROM backstop.schedule('drill-wal', '0 5 * * *', 'wal_fetch');
SELECT * FROM backstop.schedule('retention', '0 6 * * *', 'expire',
  '{"backups": {"keep_last": 2, "daily": 14, "weekly": 12, "monthly": 12, "yearly": 7}, "snapshots": {"daily": 14, "weekly": 12}}');
-- Both drills now, on demand: each restores for real, compares, cleans up, and measures its time.
SELECT job_id, state, round(seconds::numeric, 2) AS seconds, result -> 'tables' AS compared
  FROM backstop.run_job('snapshot_restore', '{"table": "public.demo_orders"}');
SELECT job_id, state, round(seconds::numeric, 2) AS seconds, result ->> 'segments_in_chain' AS wal_segments_checked
  FROM backstop.run_job('wal_fetch');
-- What retention would remove now, without removing it.
SELECT state, result -> 'kept_backups' AS kept, result ->> 'bytes' AS bytes_freed
  FROM backstop.run_job('expire', '{"dry_run": true, "backups": {"keep_last": 1}}');
-- The PITR drill replays archived WAL: finish the segment that created demo_orders and wait until
-- it is archived, then restore the newest base backup into a throwaway server and read the table.
DO $$ DECLARE seg text := pg_walfile_name(pg_current_wal_lsn()); BEGIN
  PERFORM pg_switch_wal();
  FOR i IN 1..100 LOOP
    EXIT WHEN (SELECT last_archived_wal >= seg FROM pg_stat_archiver);
    PERFORM pg_sleep(0.1);
    PERFORM pg_stat_clear_snapshot();
  END LOOP;
END $$;
SELECT job_id, state, round(seconds::numeric, 2) AS seconds, result -> 'tables' AS tables_read, result -> 'indexes' AS indexes_checked
  FROM backstop.run_job('pitr', '{"tables": ["public.demo_orders"], "indexes": ["public.demo_orders_pkey"]}');
-- One table as it was just before the DELETE, from the base backup and the WAL (the target from
-- table_history), loaded next to the original and validated, with its copy-back plans.
SELECT target_lsn AS before_delete FROM backstop.table_history('demo_orders') WHERE deleted > 0
 ORDER BY commit_time DESC LIMIT 1 \gset
SELECT strategy, description FROM backstop.recover('demo_orders', target_lsn => :'before_delete',
  target_inclusive => false, target_table => 'public.demo_orders_before_delete');
SELECT count(*) AS rows_just_before_the_delete FROM demo_orders_before_delete;
-- A logical backup (pg_dump, streamed into the repository and checked with pg_restore --list), a
-- nightly one on a schedule, and its drill: restored into a scratch database and compared.
SELECT state, backup_id, tables, rows, bytes FROM backstop.logical_backup();
SELECT * FROM backstop.schedule('nightly-dump', '0 2 * * *', 'logical_backup', '{"database": "postgres"}');
SELECT * FROM backstop.schedule('drill-dump', '0 7 * * *', 'logical_restore', '{"database": "postgres"}');
SELECT job_id, state, round(seconds::numeric, 2) AS seconds, result ->> 'tables' AS tables_compared,
       result ->> 'rows' AS rows_compared, result ->> 'sequences' AS sequences_compared
  FROM backstop.run_job('logical_restore');
SELECT name, job, cron, next_run_at, last_state FROM backstop.schedule_status;
-- The scheduler restarts a few seconds after the extension is recreated: wait for it, then ask.
DO $$ BEGIN
  FOR i IN 1..50 LOOP
    EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'backstop scheduler' AND datname = current_database());
    PERFORM pg_sleep(0.2);
  END LOOP;
END $$;
SELECT "check", status, detail FROM backstop.status
 WHERE "check" IN ('scheduler', 'schedules', 'drill_snapshot_restore', 'drill_wal_fetch', 'drill_pitr',
                   'logical_tools', 'logical_backup', 'drill_logical_restore', 'rpo');
SQL

step "point-in-time recovery: drop demo_orders, then rebuild the cluster as it was just before, beside it"
psql_demo() { scripts/cluster.sh psql "$DEMO_DIR" "$DEMO_PORT" -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
BEFORE=$(psql_demo -c "SELECT count(*) FROM demo_orders")
sleep 1
TARGET=$(psql_demo -c "SELECT now()")
sleep 1
psql_demo -c "DROP TABLE demo_orders_recovered; DROP TABLE demo_orders"
psql_demo -c "SELECT pg_switch_wal()" > /dev/null
sleep 3
CLUSTER=$(psql_demo -c "SELECT system_identifier FROM pg_control_system()")
# Every object is signed with the cluster's key; the restore trusts only its public half, which
# belongs in the recovery kit (a restore on another host has no data directory to read it from).
TRUSTED_KEY=$(psql_demo -c "SELECT backstop.repository_key()")
echo "the cluster's public key (keep it with the recovery kit): $TRUSTED_KEY"
PITR_DIR=$DEMO_DIR/pitr
PITR_PORT=$((DEMO_PORT + 6))
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PITR_DIR" -w -m fast stop > /dev/null 2>&1 || true
rm -rf "$PITR_DIR" "$PITR_DIR.run" && mkdir -p "$PITR_DIR.run" && chown postgres:postgres "$DEMO_DIR" "$PITR_DIR.run"
# The restore runs as the server's OS user: it writes the data directory the second server starts from.
runuser -u postgres -- backstop restore --repository "$DEMO_REPOSITORY" --cluster "$CLUSTER" \
  --identity-file "$IDENTITY_FILE" --trusted-key "$TRUSTED_KEY" --target-dir "$PITR_DIR" --target-time "$TARGET"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PITR_DIR" -l "$DEMO_DIR/pitr.log" -w -t 120 start \
  -o "-p $PITR_PORT -c unix_socket_directories=$PITR_DIR.run -c listen_addresses='' -c archive_mode=off" > /dev/null
for _ in $(seq 1 100); do
  [[ $(runuser -u postgres -- psql -X -qAt -h "$PITR_DIR.run" -p "$PITR_PORT" -d postgres -c "SELECT pg_is_in_recovery()") == f ]] && break
  sleep 0.2
done
AFTER=$(runuser -u postgres -- psql -X -qAt -h "$PITR_DIR.run" -p "$PITR_PORT" -d postgres -c "SELECT count(*) FROM demo_orders")
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PITR_DIR" -w -m fast stop > /dev/null
echo "demo_orders had $BEFORE rows at $TARGET; the cluster recovered to that time has $AFTER"
[[ $BEFORE == "$AFTER" ]] || { echo "point-in-time recovery did not bring demo_orders back" >&2; exit 1; }

step "one table at that time from the command line (as when the server is down): backstop recover-table"
rm -rf "$DEMO_DIR/recovered"
runuser -u postgres -- backstop recover-table --repository "$DEMO_REPOSITORY" --cluster "$CLUSTER" \
  --identity-file "$IDENTITY_FILE" --trusted-key "$TRUSTED_KEY" --scratch "$DEMO_DIR" \
  --table public.demo_orders --database postgres --target-time "$TARGET" --to "$DEMO_DIR/recovered"

cat <<EOF

backstop is running. Connect with:
  runuser -u postgres -- psql -h $DEMO_DIR/run -p $DEMO_PORT
Repository: $DEMO_REPOSITORY (encrypted to $RECIPIENT;
            identity in $IDENTITY_FILE: keep a copy somewhere safe, restores need it)
EOF
