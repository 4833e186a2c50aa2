#!/usr/bin/env bash
# Shell side of the snapshot scenarios: damages stored snapshot objects behind backstop's back, on
# a file:// repository or on S3 (Garage, signed with curl's SigV4). Prints one deterministic line.
#   snapshot.sh corrupt SCHEMA TABLE ID      flips one byte in the middle of the snapshot's data object
#   snapshot.sh swap SCHEMA TABLE ID OTHER   stores snapshot OTHER's (intact) data object under ID
#   snapshot.sh cli-verify SCHEMA TABLE      `backstop snapshots list --verify` of the table, run-specific parts masked
set -uo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

repository=$(psql -X -qAt -d postgres -c "SHOW backstop.repository")
cluster=$(psql -X -qAt -d postgres -c "SELECT system_identifier FROM pg_control_system()")
# The repository's directory name of schema.table (see crates/core/src/snapshot/mod.rs).
table_dir=$(python3 -c '
import sys
enc = lambda s: "".join(chr(b) if chr(b).isalnum() and b < 128 or b in b"_-" else "%%%02X" % b for b in s.encode())
print(enc(sys.argv[1]) + "." + enc(sys.argv[2]))' "$2" "$3")
object() { echo "$cluster/snapshots/$table_dir/$1/data.parquet"; }

s3_url() {
  local rest=${repository#s3://}
  echo "$BACKSTOP_TEST_S3_ENDPOINT/${rest%%/*}/${rest#*/}/$(object "$1" | sed 's/%/%25/g')"
}
s3() { curl -sSf --aws-sigv4 "aws:amz:garage:s3" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --user "$BACKSTOP_TEST_S3_ACCESS_KEY_ID:$BACKSTOP_TEST_S3_SECRET_ACCESS_KEY" "$@"; }

download() {  # ID FILE
  if [[ $repository == file://* ]]; then cp "${repository#file://}/$(object "$1")" "$2"; else s3 -o "$2" "$(s3_url "$1")"; fi
}
upload() {  # FILE ID
  if [[ $repository == file://* ]]; then cp "$1" "${repository#file://}/$(object "$2")"; else s3 -T "$1" "$(s3_url "$2")" >/dev/null; fi
}

case $1 in
  corrupt)
    download "$4" "$work/object" || exit 1
    flip-middle-byte "$work/object"
    upload "$work/object" "$4" && echo "flipped a byte in the middle of the data object of $2.$3"
    ;;
  swap)
    download "$5" "$work/object" && upload "$work/object" "$4" && echo "stored another snapshot's data object under $2.$3's name"
    ;;
  cli-verify)
    if [[ $repository == s3://* ]]; then
      export BACKSTOP_S3_ENDPOINT=$BACKSTOP_TEST_S3_ENDPOINT BACKSTOP_S3_REGION=garage BACKSTOP_S3_FORCE_PATH_STYLE=true
      export AWS_ACCESS_KEY_ID=$BACKSTOP_TEST_S3_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$BACKSTOP_TEST_S3_SECRET_ACCESS_KEY
    fi
    backstop snapshots list --verify --table "$2.$3" --repository "$repository" --cluster "$cluster" > "$work/out" 2>&1
    code=$?
    sed -E "s/snap_[0-9a-f]{8}/snap_<id>/g; s/[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z/<time>/g; s/[0-9a-f]{64}/<sha256>/g;
            s#(file|s3)://[^ ,]*#<repository>#g; s/$cluster/<cluster>/g; s/[0-9]+ bytes/<n> bytes/g" "$work/out"
    echo "backstop snapshots list: exit $code"
    ;;
  *)
    echo "usage: snapshot.sh corrupt|swap|cli-verify SCHEMA TABLE [ID [OTHER]]" >&2
    exit 2
    ;;
esac
