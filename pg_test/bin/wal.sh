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
  records-vs-waldump)
    # "wal.sh records-vs-waldump FIRST_SEGMENT LAST_SEGMENT": backstop's WAL reader against
    # pg_waldump on the same pg_wal files; every transaction end (with the files a commit drops),
    # restore point, heap row change and relation file creation or truncation, normalized to one
    # line each, must be the same list.
    files=()
    for name in $(ls "$PGDATA/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort); do
      [[ $name < $2 || $name > $3 ]] || files+=("$PGDATA/pg_wal/$name")
    done
    TZ=UTC pg_waldump "${files[0]}" "${files[-1]}" 2>/dev/null \
      | sed -nE 's/^rmgr: ([A-Za-z0-9]+) +len .*tx: +([0-9]+), lsn: ([0-9A-F]+\/[0-9A-F]+), prev [0-9A-F]+\/[0-9A-F]+, desc: (.*)$/\1\t\2\t\3\t\4/p' \
      | awk -F'\t' '
        function lsn(x,   p) { split(x, p, "/"); sub(/^0+/, "", p[2]); if (p[2] == "") p[2] = "0"; return p[1] "/" p[2] }
        function rel(path,   p) { split(path, p, "/"); if (p[1] == "global") return "1664/0/" p[2]; return "1663/" p[2] "/" p[3] }
        {
          rm = $1; tx = $2; at = lsn($3); d = $4
          if (rm == "Transaction" && match(d, /^(COMMIT|ABORT) [0-9-]+ [0-9:.]+ UTC/)) {
            split(substr(d, 1, RLENGTH), w, " ")
            line = at " tx " tx " " w[1] " " w[2] " " w[3] "+00"
            if (match(d, /rels: [^;]*/)) {
              n = split(substr(d, RSTART + 6, RLENGTH - 6), r, " "); s = ""
              for (i = 1; i <= n; i++) s = s (i > 1 ? "," : "") rel(r[i])
              line = line " drops " s
            }
            print line
          } else if (rm == "XLOG" && d ~ /^RESTORE_POINT /) {
            print at " RESTORE_POINT " substr(d, 15)
          } else if ((rm == "Heap" || rm == "Heap2") && match(d, /^(INSERT|UPDATE|HOT_UPDATE|DELETE|MULTI_INSERT)(\+INIT)? /)) {
            op = substr(d, 1, RLENGTH - 1); sub(/\+INIT/, "", op)
            if (op == "HOT_UPDATE") op = "UPDATE"
            rows = 1
            if (op == "MULTI_INSERT") {
              op = "INSERT"
              if (match(d, /ntuples: [0-9]+/)) rows = substr(d, RSTART + 9, RLENGTH - 9)
              else if (match(d, /[0-9]+ tuples/)) rows = substr(d, RSTART, RLENGTH - 7)
            }
            match(d, /blkref #0: rel [0-9]+\/[0-9]+\/[0-9]+/)
            print at " tx " tx " " op " " rows " " substr(d, RSTART + 15, RLENGTH - 15)
          } else if (rm == "Storage" && match(d, /^CREATE [^ ]+$/) && d !~ /_(fsm|vm|init)$/) {
            print at " tx " tx " FILE_CREATE " rel(substr(d, 8))
          } else if (rm == "Storage" && match(d, /^TRUNCATE [^ ]+ to [0-9]+ blocks/)) {
            split(d, w, " "); print at " tx " tx " FILE_TRUNCATE " rel(w[2]) " to " w[4] " blocks"
          } else if (rm == "Standby" && d ~ /^LOCK /) {
            n = split(d, w, " ")
            for (i = 2; i + 5 <= n; i += 6) print at " LOCK xid " w[i + 1] " db " w[i + 3] " rel " w[i + 5]
          }
        }' > "$work/waldump"
    backstop wal records "${files[@]}" 2>/dev/null \
      | awk '
        $2 == "RESTORE_POINT" { name = $0; sub(/^[^ ]+ [^ ]+ [^ ]+ [^ ]+ /, "", name); print $1 " RESTORE_POINT " name; next }
        $4 == "COMMIT" || $4 == "ABORT" { line = $1 " tx " $3 " " $4 " " $5 " " $6; for (i = 7; i <= NF; i++) if ($i == "drops") line = line " drops " $(i + 1); print line; next }
        $4 == "INSERT" || $4 == "UPDATE" || $4 == "DELETE" { print $1 " tx " $3 " " $4 " " $5 " " $7; next }
        $4 == "FILE_CREATE" && $7 == 0 { print $1 " tx " $3 " FILE_CREATE " $5; next }
        $4 == "FILE_TRUNCATE" { print $1 " tx " $3 " FILE_TRUNCATE " $5 " to " $7 " blocks"; next }
        $2 == "LOCK" { for (i = 3; i + 5 <= NF; i += 6) print $1 " LOCK xid " $(i + 1) " db " $(i + 3) " rel " $(i + 5); next }
      ' > "$work/backstop"
    echo "pg_waldump lines: $([[ $(wc -l < "$work/waldump") -ge ${4:-100} ]] && echo "at least ${4:-100}" || echo "only $(wc -l < "$work/waldump")")"
    for kind in COMMIT ABORT RESTORE_POINT INSERT UPDATE DELETE FILE_CREATE FILE_TRUNCATE LOCK; do
      echo "$kind in pg_waldump: $(grep -c " $kind " "$work/waldump" | awk '{ print ($1 > 0 ? "yes" : "none") }')"
    done
    if cmp -s "$work/waldump" "$work/backstop"; then
      echo "backstop's records equal pg_waldump's: yes"
    else
      echo "backstop's records equal pg_waldump's: no"
      diff "$work/waldump" "$work/backstop" | head -20
    fi
    ;;
  garage)
    "$BACKSTOP_TEST_GARAGE_CTL" "$2" > /dev/null && echo "garage: $2"
    ;;
  *)
    echo "unknown: $1" >&2
    exit 2
    ;;
esac
