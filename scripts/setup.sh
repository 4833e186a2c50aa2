#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs backstop's main job against the embedded default
# (a file:// repository): installs what is missing, builds and installs the extension and CLI,
# starts a PostgreSQL 15 cluster with backstop preloaded, creates the extension and asks doctor.
# Safe to run again: installed pieces are skipped, the cluster is restarted on the new build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

DEMO_DIR=${BACKSTOP_DEMO_DIR:-/var/lib/backstop-demo}
DEMO_PORT=${BACKSTOP_DEMO_PORT:-5433}
DEMO_REPOSITORY=file://$DEMO_DIR/repository

ensure_everything
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
scripts/cluster.sh start "$DEMO_DIR" "$DEMO_PORT" "$DEMO_REPOSITORY" "backstop.encryption_recipients = '$RECIPIENT'" \
  "backstop.encryption_identity_file = '$IDENTITY_FILE'"

step "main job: CREATE EXTENSION backstop, doctor, then a table snapshot and its guided recovery"
scripts/cluster.sh psql "$DEMO_DIR" "$DEMO_PORT" -d postgres -v ON_ERROR_STOP=1 <<'SQL'
-- Before the first release the extension version stays 0.1.0 and holds no data of its own, so the
-- demo recreates it to pick up new SQL objects from a rebuild.
DROP EXTENSION IF EXISTS backstop;
CREATE EXTENSION backstop;
SELECT pg_switch_wal() IS NOT NULL AS switched_wal;
SELECT pg_sleep(2);
\x auto
SELECT "check", status, detail, hint FROM backstop.doctor();
SELECT backstop.doctor_report() ->> 'verdict' AS verdict, backstop.doctor_report() ->> 'reason' AS reason;
SELECT * FROM backstop.archive_status;
\x off
-- A table snapshot, an accident, and the guided recovery.
DROP TABLE IF EXISTS demo_orders, demo_orders_recovered;
CREATE TABLE demo_orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2), placed timestamptz);
INSERT INTO demo_orders SELECT g, 'customer ' || g % 100, g * 1.25, now() - g * interval '1 hour'
  FROM generate_series(1, 10000) g;
SELECT backstop.snapshot_table('demo_orders') AS snapshot_id;
DELETE FROM demo_orders WHERE id % 3 = 0;
SELECT strategy, description FROM backstop.recover('demo_orders');
SELECT sql FROM backstop.copyback_plan('demo_orders_recovered') WHERE strategy = 'insert_missing' \gexec
SELECT count(*) AS demo_orders_after_recovery FROM demo_orders;
SQL

cat <<EOF

backstop is running. Connect with:
  runuser -u postgres -- psql -h $DEMO_DIR/run -p $DEMO_PORT
Repository: $DEMO_REPOSITORY (encrypted to $RECIPIENT;
            identity in $IDENTITY_FILE: keep a copy somewhere safe, restores need it)
EOF
