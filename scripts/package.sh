#!/usr/bin/env bash
# Builds the Debian package postgresql-<major>-backstop_<version>_amd64.deb for the selected
# PostgreSQL (BACKSTOP_PG, 15 by default; see scripts/lib.sh), into that version's Debian
# directories (/usr/lib/postgresql/<major>/lib, /usr/share/postgresql/<major>/extension, where
# Debian's and the PostgreSQL project's apt packages put PostgreSQL): the extension as `cargo
# pgrx package` lays it out, written by crates/install (the shared library, the control file, the
# version's SQL and every upgrade script), the `backstop` CLI in /usr/bin, the README and the license. Nothing in it needs
# Rust: the library and the CLI link only the C library (Rust's standard library is static).
#
#   scripts/package.sh [OUT_DIR]      (default target/debian; BACKSTOP_PROFILE=debug packages the
#                                      quicker debug build, which is what the test suite installs)
# Prints the path of the package on its last line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

OUT_DIR=${1:-target/debian}
profile=${BACKSTOP_PROFILE:-release}
version=$(backstop_version)
name=postgresql-$PG_MAJOR-backstop
arch=$(dpkg --print-architecture)

step "building backstop $version ($profile) for PostgreSQL $PG_MAJOR"
release=()
[[ $profile == release ]] && release=(--release)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
ensure_pgrx_config
# The same cargo invocation as install_backstop, so a build made by setup or the tests is reused.
cargo build "${release[@]}" -p backstop -p backstop-cli -p backstop-install --no-default-features \
  --features "backstop/pg$PG_MAJOR"
target=${CARGO_TARGET_DIR:-target}/$profile
# The extension laid out under the staging root as `cargo pgrx package` lays it out.
"$target/backstop-install" --pg-config "$PG_CONFIG" --library "$target/libbackstop.so" --root "$stage/root"

step "assembling $name $version ($arch)"
root=$stage/root
# A relocatable build (16, 17, 18 under $PG_BINARIES_ROOT) reports its own directories: the
# package installs into the ones the distribution's postgresql-<major> uses.
pkglibdir=/usr/lib/postgresql/$PG_MAJOR/lib
extdir=/usr/share/postgresql/$PG_MAJOR/extension
if [[ $("$PG_CONFIG" --pkglibdir) != "$pkglibdir" ]]; then
  mkdir -p "$root$pkglibdir" "$root$extdir"
  mv "$root$("$PG_CONFIG" --pkglibdir)"/* "$root$pkglibdir/"
  mv "$root$("$PG_CONFIG" --sharedir)"/extension/* "$root$extdir/"
  rm -rf "${root:?}/opt"
fi
install -D -m 0755 "$target/backstop" "$root/usr/bin/backstop"
if [[ $profile == release ]]; then
  strip --strip-debug "$root/usr/bin/backstop" "$root$pkglibdir/backstop.so"
fi
doc=$root/usr/share/doc/$name
install -D -m 0644 README.md "$doc/README.md"
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: backstop"
  echo
  echo "Files: *"
  echo "License: PostgreSQL"
  echo " Permission to use, copy, modify, and distribute this software and its documentation for any"
  echo " purpose, without fee, and without a written agreement is hereby granted, provided that the above"
  echo " copyright notice and this paragraph and the following two paragraphs appear in all copies."
} > "$doc/copyright"

# The C library version the binaries need: the newest GLIBC_x.y symbol version they reference.
glibc=$(objdump -T "$root/usr/bin/backstop" "$root$pkglibdir/backstop.so" |
  grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
for binary in "$root/usr/bin/backstop" "$root$pkglibdir/backstop.so"; do
  if objdump -p "$binary" | awk '/NEEDED/ { print $2 }' | grep -qv -E '^(libc|libm|libgcc_s|libpthread|libdl|librt|ld-linux[^ ]*)\.so'; then
    echo "$binary needs a library the package does not depend on:" >&2
    objdump -p "$binary" | awk '/NEEDED/ { print "  " $2 }' >&2
    exit 1
  fi
done
size=$(du -sk "$root" | awk '{ print $1 }')
mkdir -p "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: backstop developers <backstop@localhost>
Installed-Size: $size
Depends: postgresql-$PG_MAJOR, postgresql-client-$PG_MAJOR, libc6 (>= $glibc), libgcc-s1
Replaces: backstop-postgresql-$PG_MAJOR
Conflicts: backstop-postgresql-$PG_MAJOR
Section: database
Priority: optional
Homepage: https://github.com/backstop/backstop
Description: PostgreSQL backups you can prove will restore
 backstop is a PostgreSQL extension (CREATE EXTENSION backstop) with a command-line tool:
 WAL archiving to S3 or a local directory, table snapshots and guided table recovery,
 incremental base backups and point-in-time recovery, logical backups, schedules,
 retention and restore drills run by a background worker, and doctor().
EOF
mkdir -p "$OUT_DIR"
deb=$OUT_DIR/${name}_${version}_${arch}.deb
dpkg-deb --build --root-owner-group "$root" "$deb" >/dev/null
echo "$deb"
