#!/usr/bin/env bash
# Shell side of the PITR scenarios: restores with the backstop CLI into a new directory and runs a
# second server on it, on another port, beside the scenario's own. Prints deterministic lines.
#   pitr.sh restore NAME [backstop restore options]   restore into $SCENARIO_DIR/NAME
#   pitr.sh start NAME PORT [archive|as-restored]     start it (archiving off unless "archive"; "as-restored"
#                                                     overrides nothing: what the restore configured), wait for promotion
#   pitr.sh sql NAME PORT SQL                         run SQL on it, print the rows
#   pitr.sh stop NAME                                 stop it (the directory stays)
#   pitr.sh damage-packs corrupt|remove               flip a byte in / remove every pack of the repository
#   pitr.sh damage-logical DATABASE                   flip a byte in the newest logical dump of DATABASE
#   pitr.sh cli ARGS                                  run the backstop CLI against the scenario's repository
#   pitr.sh trust-restored                            trust the signing keys of every restored cluster (reload)
# Environment (pg_test/run.sh): PGDATA, PGHOST, PGPORT, BACKSTOP_REPOSITORY (or "s3" mode as in wal.sh).
set -uo pipefail
base=$(dirname "$PGDATA")
pg_ctl() { "${PG_BIN:-/usr/lib/postgresql/15/bin}/pg_ctl" "$@"; }

if [[ ${BACKSTOP_PITR_S3:-} == 1 ]]; then
  BACKSTOP_REPOSITORY=$(psql -X -qAt -d postgres -c "SHOW backstop.repository")
  export BACKSTOP_REPOSITORY BACKSTOP_S3_ENDPOINT=$BACKSTOP_TEST_S3_ENDPOINT BACKSTOP_S3_REGION=garage
  export BACKSTOP_S3_FORCE_PATH_STYLE=true AWS_ACCESS_KEY_ID=$BACKSTOP_TEST_S3_ACCESS_KEY_ID
  export AWS_SECRET_ACCESS_KEY=$BACKSTOP_TEST_S3_SECRET_ACCESS_KEY
fi
cluster=$(psql -X -qAt -d postgres -c "SELECT system_identifier FROM pg_control_system()")
export BACKSTOP_CLUSTER=$cluster

mask() {
  sed -E "s/[0-9]{8}T[0-9]{6}Z-([FIL])/<backup id>-\1/g; s/$cluster/<cluster>/g; s/[0-9a-f]{64}/<sha256>/g;
          s/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:.]+\+00/<time>/g; s/LSN [0-9A-F]+\/[0-9A-F]+/LSN <lsn>/g;
          s#$base#<scenario>#g; s#s3://[^/ ]+/#s3://<bucket>/#g; s/[0-9]+ of its [0-9]+ packs/N of its N packs/g; s#packs/[0-9a-f]{2}/#packs/<xx>/#g; s/ is corrupt: .*/ is corrupt: <why differs with where the byte fell>/"
}

case $1 in
  restore)
    name=$2
    shift 2
    # The scenario's server is still running on its tablespaces: every restore relocates them.
    maps=()
    for oid in $(psql -X -qAt -d postgres -c "SELECT oid FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')"); do
      maps+=(--tablespace-map "$oid=$base/$name.ts$oid")
    done
    # A cluster restored as the primary signs what it archives with a key of its own; a DBA adds its
    # public key to the recovery kit. Here: every restored data directory's key is trusted too.
    keys=$(cat "$base"/*/backstop_signing.key 2>/dev/null | grep -o 'ed25519:[0-9a-f]\{64\}' | sort -u | paste -sd, -)
    if BACKSTOP_TRUSTED_KEYS=$keys backstop restore --target-dir "$base/$name" --json "${maps[@]}" "$@" > "$base/$name.restore.json" 2> "$base/$name.restore.err"; then
      python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
kind = "an incremental" if r["backup_id"].endswith("I") else "a full"
target = (r["recovery_target"] or "the end of the archive").split(" = ")[0]
print(f"restored {sys.argv[2]} from {kind} backup, recovery target: {target}")
s = r["summary"]
if s["bytes_kept"] > 0:
    print("delta restore kept most bytes in place:", s["bytes_kept"] > s["bytes_fetched"])
' "$base/$name.restore.json" "$name"
    else
      echo "restore refused: $(grep -m1 '^backstop:' "$base/$name.restore.err" | mask)"
      [[ -f $base/$name/global/pg_control ]] && echo "$name HAS a control file" || echo "$name has no control file: it cannot be started"
    fi
    ;;
  programs)
    # What a restore not told --pg-bin found to start NAME with: this server's programs (same major).
    python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
found = "this server'"'"'s" if r["pg_bin"] == sys.argv[2] else r["pg_bin"]
warning = r["warning"]
print(f"programs to start {sys.argv[3]} with: {found}; warning: {warning}")
' "$base/$2.restore.json" "$(pg_config --bindir)" "$2"
    ;;
  start)
    name=$2 port=$3 archive=${4:-}
    mkdir -p "$base/$name.run"
    opts="-p $port -c unix_socket_directories=$base/$name.run -c listen_addresses=''"
    [[ $archive == archive || $archive == as-restored ]] || opts="$opts -c archive_mode=off"
    if ! pg_ctl -D "$base/$name" -l "$base/$name.log" -o "$opts" -w -t 120 start > /dev/null 2>&1; then
      echo "$name did not start: $(grep -E 'FATAL|PANIC' "$base/$name.log" | tail -1 | sed -E 's/^.*(FATAL|PANIC): *//' | mask)"
      exit 0
    fi
    for _ in $(seq 1 600); do
      [[ $(psql -X -qAt -h "$base/$name.run" -p "$port" -d "$PGDATABASE" -c "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]] && break
      sleep 0.2
    done
    echo "$name started and promoted on timeline $(psql -X -qAt -h "$base/$name.run" -p "$port" -d "$PGDATABASE" -c "SELECT timeline_id FROM pg_control_checkpoint()")"
    ;;
  start-standby)
    name=$2 port=$3
    mkdir -p "$base/$name.run"
    if ! pg_ctl -D "$base/$name" -l "$base/$name.log" -o "-p $port -c unix_socket_directories=$base/$name.run -c listen_addresses='' -c archive_mode=off" -w -t 120 start > /dev/null 2>&1; then
      echo "$name did not start: $(grep -E 'FATAL|PANIC' "$base/$name.log" | tail -1 | sed -E 's/^.*(FATAL|PANIC): *//' | mask)"
      exit 0
    fi
    echo "$name started, in recovery: $(psql -X -qAt -h "$base/$name.run" -p "$port" -d "$PGDATABASE" -c "SELECT pg_is_in_recovery()")"
    ;;
  sql-until)
    # Runs SQL on it until it prints EXPECTED (60 s at most): a standby catching up.
    for _ in $(seq 1 300); do
      out=$(psql -X -qAt -h "$base/$2.run" -p "$3" -d "$PGDATABASE" -c "$4" 2>/dev/null)
      [[ $out == "$5" ]] && { echo "$2 shows $5"; exit 0; }
      sleep 0.2
    done
    echo "$2 never showed $5 (last: $out)"
    ;;
  sql)
    psql -X -qAt -h "$base/$2.run" -p "$3" -d "$PGDATABASE" -c "$4" 2>&1 | mask
    ;;
  stop)
    pg_ctl -D "$base/$2" -w -m fast stop > /dev/null 2>&1 && echo "$2 stopped"
    ;;
  damage-packs)
    root=${BACKSTOP_REPOSITORY#file://}/$cluster/packs
    n=0
    for pack in $(find "$root" -type f | sort); do
      if [[ $2 == corrupt ]]; then flip-middle-byte "$pack"; else rm -f "$pack"; fi
      n=$((n + 1))
    done
    echo "$2: $([[ $n -gt 0 ]] && echo "every pack" || echo "no pack found")"
    ;;
  damage-logical)
    # Flips a byte in the middle of the newest logical backup's dump of database $2.
    dump=$(find "${BACKSTOP_REPOSITORY#file://}/$cluster/logical/$2" -name dump -type f | sort | tail -1)
    flip-middle-byte "$dump" && echo "flipped a byte in the newest dump of $2"
    ;;
  chmod-wal)
    # Makes the archive's WAL directory unwritable (000) or writable again (755): archiving stalls.
    find "${BACKSTOP_REPOSITORY#file://}/$cluster/wal" -mindepth 1 -maxdepth 1 -type d -exec chmod "$2" {} + && echo "WAL directories of the archive: mode $2"
    ;;
  trust-restored)
    # What a DBA does once a copy restored --as-primary has archived into the namespace with a key
    # of its own: trust that public key here too (every restored data directory's key, here).
    keys=$(cat "$base"/*/backstop_signing.key 2>/dev/null | grep -o 'ed25519:[0-9a-f]\{64\}' | sort -u | paste -sd, -)
    psql -X -qAt -d postgres -c "ALTER SYSTEM SET backstop.trusted_keys = '$keys'" -c "SELECT pg_reload_conf()" > /dev/null
    echo "trusting $(echo "$keys" | tr ',' '\n' | wc -l) key(s)"
    ;;
  verify)
    if backstop verify > "$base/verify.out" 2>&1; then echo "verify: all backups OK"; else
      echo "verify: backups that FAILED: $(grep -o '^[0-9T]*Z-[FI]: FAILED' "$base/verify.out" | sort -u | wc -l)"; fi
    ;;
  cli)
    shift
    backstop "$@" 2>&1 | mask
    ;;
esac
