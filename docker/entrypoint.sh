#!/usr/bin/env bash
# Container entrypoint: a PostgreSQL 15 cluster with backstop preloaded and archiving.
#   BACKSTOP_REPOSITORY              file:///var/lib/backstop/repository (default) or s3://bucket/prefix
#   BACKSTOP_ENCRYPTION_RECIPIENTS   age public keys; recommended
#   BACKSTOP_ENCRYPTION_IDENTITY_FILE   age identity file (mounted), for restoring encrypted snapshots in SQL
#   BACKSTOP_S3_ENDPOINT, BACKSTOP_S3_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   for S3
#   POSTGRES_PASSWORD                password of the postgres role for TCP connections (required)
set -euo pipefail
source /usr/local/share/backstop/lib.sh

: "${PGDATA:=/var/lib/postgresql/data}"
: "${BACKSTOP_REPOSITORY:=file:///var/lib/backstop/repository}"

if [[ ! -s $PGDATA/PG_VERSION ]]; then
  : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD for the postgres role}"
  "$PG_BIN/initdb" -D "$PGDATA" --auth-local=peer --auth-host=scram-sha-256 \
    --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") --locale=C.UTF-8 --encoding=UTF8
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  fresh=1
fi

extra=("listen_addresses = '*'")
[[ -n ${BACKSTOP_ENCRYPTION_RECIPIENTS:-} ]] && extra+=("backstop.encryption_recipients = '$BACKSTOP_ENCRYPTION_RECIPIENTS'")
[[ -n ${BACKSTOP_ENCRYPTION_IDENTITY_FILE:-} ]] && extra+=("backstop.encryption_identity_file = '$BACKSTOP_ENCRYPTION_IDENTITY_FILE'")
[[ -n ${BACKSTOP_S3_ENDPOINT:-} ]] && extra+=("backstop.s3_endpoint = '$BACKSTOP_S3_ENDPOINT'" "backstop.s3_force_path_style = on")
[[ -n ${BACKSTOP_S3_REGION:-} ]] && extra+=("backstop.s3_region = '$BACKSTOP_S3_REGION'")
write_backstop_conf "$PGDATA" "$BACKSTOP_REPOSITORY" "${extra[@]}"

if [[ -n ${fresh:-} ]]; then
  "$PG_BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start
  psql -X -v ON_ERROR_STOP=1 -d postgres -c "CREATE EXTENSION IF NOT EXISTS backstop"
  "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop
fi

exec "$PG_BIN/postgres" -D "$PGDATA"
