#!/usr/bin/env bash
# Shell side of the WAL scenarios, called from psql with \!. Prints one deterministic line per
# fact it checks. Environment (set by pg_test/run.sh): PGDATA, PGHOST, PGPORT, BACKSTOP_REPOSITORY,
# and for S3 BACKSTOP_S3_ENDPOINT, BACKSTOP_S3_REGION, BACKSTOP_S3_FORCE_PATH_STYLE, AWS_* keys.
set -uo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# "wal.sh s3 COMMAND ..." runs COMMAND against the server's S3 repository (Garage in the tests).
if [[ ${1:-} == s3 ]]; then
  shift
  BACKSTOP_REPOSITORY=$(psql -X -qAt -d postgres -c "SHOW backstop.repository")
  export BACKSTOP_REPOSITORY BACKSTOP_S3_ENDPOINT=$BACKSTOP_TEST_S3_ENDPOINT BACKSTOP_S3_REGION=garage
  export BACKSTOP_S3_FORCE_PATH_STYLE=true AWS_ACCESS_KEY_ID=$BACKSTOP_TEST_S3_ACCESS_KEY_ID
  export AWS_SECRET_ACCESS_KEY=$BACKSTOP_TEST_S3_SECRET_ACCESS_KEY
fi

cluster() { psql -X -qAt -d postgres -c "SELECT system_identifier FROM pg_control_system()"; }

archived_segments() {
  backstop wal list --cluster "$(cluster)" | awk '$2 == "segment" {print $1}'
}

case $1 in
  compare-all)
    # Fetch every archived segment still in pg_wal and compare it byte for byte.
    total=0 compared=0 differ=0
    for name in $(archived_segments); do
      total=$((total + 1))
      [[ -f $PGDATA/pg_wal/$name ]] || continue
      (cd "$work" && backstop wal fetch --cluster "$(cluster)" --prefetch 4 --spool-dir "$work/spool" "$name" "$work/$name") || { echo "fetch of $name failed"; differ=$((differ + 1)); continue; }
      compared=$((compared + 1))
      cmp -s "$PGDATA/pg_wal/$name" "$work/$name" || { echo "$name differs"; differ=$((differ + 1)); }
      rm -f "$work/$name"
    done
    min=${2:-10}
    echo "archived segments >= $min: $([[ $total -ge $min ]] && echo yes || echo "no ($total)")"
    echo "every archived segment still in pg_wal compared: $([[ $compared -ge $((total - 2)) && $compared -gt 0 ]] && echo yes || echo "no ($compared of $total)")"
    echo "segments that differ: $differ"
    ;;
  kinds)
    # Which kinds of WAL file the archive holds.
    backstop wal list --cluster "$(cluster)" | awk '$2 ~ /^(segment|partial|backup|history)$/ {print $2}' | sort -u | tr '\n' ' ' | sed 's/ $/\n/;s/^/kinds archived: /'
    ;;
  verify)
    if backstop wal verify --cluster "$(cluster)" > "$work/out"; then echo "wal verify: archive OK"; else
      echo "wal verify: problems"; grep -E "FAILED|gap" "$work/out" | sed -E "s/[0-9a-f]{64}/<sha256>/g; s/$(cluster)/<cluster>/g"; fi
    ;;
  ready-count)
    echo "WAL files waiting in pg_wal: $(ls "$PGDATA/pg_wal/archive_status" | grep -c '\.ready$')"
    ;;
  ready-waiting)
    n=$(ls "$PGDATA/pg_wal/archive_status" | grep -c '\.ready$')
    echo "segments kept in pg_wal while the store is down: $([[ $n -gt 0 ]] && echo yes || echo no)"
    ;;
  rearchive)
    # Make the archiver ship an already archived file again.
    mv "$PGDATA/pg_wal/archive_status/$2.done" "$PGDATA/pg_wal/archive_status/$2.ready" && echo "marked $2 ready again"
    ;;
  replace-object)
    # Put different bytes under an archived segment's name, behind the archiver's back.
    repository=${BACKSTOP_REPOSITORY#file://}
    object=$repository/$(cluster)/wal/${2:0:16}/$2
    rm -f "$object"
    # 'A' bytes: not a WAL page header, so the push takes it as an opaque file of this cluster.
    head -c 16777216 /dev/zero | tr '\0' 'A' > "$work/$2"
    backstop wal push --cluster "$(cluster)" "$work/$2" && echo "replaced $2 with different bytes"
    ;;
  remove-object)
    repository=${BACKSTOP_REPOSITORY#file://}
    rm -f "$repository/$(cluster)/wal/${2:0:16}/$2" && echo "removed the object of $2"
    ;;
  corrupt-object)
    repository=${BACKSTOP_REPOSITORY#file://}
    object=$repository/$(cluster)/wal/${2:0:16}/$2
    flip-middle-byte "$object" && echo "flipped a byte in the middle of $2"
    ;;
  fetch)
    (cd "$work" && backstop wal fetch --cluster "$(cluster)" --prefetch 0 "$2" "$work/out" 2> "$work/err")
    code=$?
    echo "fetch $2: exit $code, file written: $([[ -f $work/out ]] && echo yes || echo no)"
    sed -E "s/[0-9a-f]{64}/<sha256>/g; s/$(cluster)/<cluster>/g" "$work/err"
    ;;
  claim-foreign)
    # A namespace claimed by another cluster (system identifier 42), via a pushed segment.
    python3 - "$work/000000010000000000000001" <<'PY'
import struct, sys
page = bytearray(16 << 20)
struct.pack_into("<HHIQIIQII", page, 0, 0xD110, 0x0002, 1, 0, 0, 0, 42, 16 << 20, 8192)
open(sys.argv[1], "wb").write(page)
PY
    backstop wal push --cluster "$2" "$work/000000010000000000000001" && echo "namespace $2 claimed by system identifier 42"
    ;;
  garage)
    "$BACKSTOP_TEST_GARAGE_CTL" "$2" > /dev/null && echo "garage: $2"
    ;;
  *)
    echo "unknown: $1" >&2
    exit 2
    ;;
esac
