#!/usr/bin/env bash
# The Debian packages as a DBA meets them (the extension's for this major and the CLI's it depends
# on): built by scripts/package.sh, installed with apt-get after
# every file the development install put in place is removed (so only the package provides
# backstop), then a fresh cluster preloads it, CREATE EXTENSION, doctor() and DROP EXTENSION run,
# the CLI runs with an environment that has no Rust in it, and apt-get remove takes every file
# away again. Ends by reinstalling the development build, leaving the machine as it found it.
#   scripts/test_package.sh     (BACKSTOP_PROFILE=debug by default here: the suite's own build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

DIR=${BACKSTOP_PACKAGE_TEST_DIR:-/var/lib/backstop-test/package}
PORT=${BACKSTOP_PACKAGE_TEST_PORT:-5446}
name=postgresql-$PG_MAJOR-backstop
libdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension
fail() { echo "package test FAILED: $*" >&2; exit 1; }

step "Debian package: build"
built=$(BACKSTOP_PROFILE=${BACKSTOP_PROFILE:-debug} scripts/package.sh target/debian | tail -2)
cli_deb=$(head -1 <<<"$built") deb=$(tail -1 <<<"$built")
[[ -f $deb && -f $cli_deb && $cli_deb == */backstop-cli_* ]] || fail "scripts/package.sh did not produce both packages"
for package in "$cli_deb" "$deb"; do
  dpkg-deb --info "$package" | sed -n 's/^ \(Package\|Version\|Depends\):/  \1:/p'
  dpkg-deb --contents "$package" | awk '{ print "  " $6 }' | grep -E 'backstop(\.so|\.control|--|$)|README' || true
done

step "Debian package: install with apt-get (development files removed first)"
scripts/cluster.sh stop "$DIR" 2>/dev/null || true
rm -f "$libdir/backstop.so" "$extdir/backstop.control" "$extdir"/backstop--*.sql /usr/local/bin/backstop
# The extension's package alone is refused: it depends on the CLI's.
if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$(realpath "$deb")" >/dev/null 2>&1; then
  fail "$name installed without backstop-cli, which it depends on"
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$(realpath "$cli_deb")" "$(realpath "$deb")" >/dev/null
dpkg-query -W -f='${Package} ${Version} ${Status}\n' backstop-cli "$name"
for file in "$libdir/backstop.so" "$extdir/backstop.control"; do
  [[ $(dpkg -S "$file" 2>/dev/null | cut -d: -f1) == "$name" ]] || fail "$file is not installed by $name"
done
[[ $(dpkg -S /usr/bin/backstop 2>/dev/null | cut -d: -f1) == backstop-cli ]] || fail "/usr/bin/backstop is not installed by backstop-cli"
# No Rust on the path, no cargo home: the CLI and the library stand alone.
env -i PATH=/usr/bin:/bin /usr/bin/backstop --version
if ldd "$libdir/backstop.so" /usr/bin/backstop | grep -E 'not found|rustup|\.cargo'; then
  fail "a packaged binary needs something outside the package's dependencies"
fi

step "Debian package: CREATE EXTENSION, doctor, DROP EXTENSION on a fresh cluster"
rm -rf "$DIR"
mkdir -p "$DIR"
scripts/cluster.sh start "$DIR" "$PORT" "file://$DIR/repository"
psql_pkg() { scripts/cluster.sh psql "$DIR" "$PORT" -d postgres -X -qAt -v ON_ERROR_STOP=1 "$@"; }
psql_pkg -c "CREATE EXTENSION backstop"
version=$(psql_pkg -c "SELECT extversion FROM pg_extension WHERE extname = 'backstop'")
[[ $version == "$(backstop_version)" ]] || fail "extension version $version"
verdict=$(psql_pkg -c "SELECT backstop.doctor_report() ->> 'verdict'")
echo "  CREATE EXTENSION backstop: version $version, doctor says $verdict"
[[ $verdict =~ ^(ready|degraded|not_ready)$ ]] || fail "doctor gave no verdict"
[[ $(psql_pkg -c "SELECT count(*) FROM backstop.doctor() WHERE \"check\" = 'logical_tools' AND status = 'ok'") == 1 ]] ||
  fail "the packaged extension does not find pg_dump (logical_tools)"
# Test-only hooks are not in what ships.
if psql_pkg -c "SHOW backstop.test_clock" >/dev/null 2>&1; then
  fail "the packaged extension knows backstop.test_clock, a test-only hook"
fi
psql_pkg -c "DROP EXTENSION backstop"
scripts/cluster.sh stop "$DIR"

step "Debian package: remove"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq "$name" backstop-cli >/dev/null
for file in "$libdir/backstop.so" "$extdir/backstop.control" /usr/bin/backstop; do
  [[ ! -e $file ]] || fail "$file is still there after apt-get remove"
done
echo "  removed: no backstop file left"
rm -rf "$DIR"

install_backstop
