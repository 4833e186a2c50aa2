#!/usr/bin/env bash
# Builds the Debian packages postgresql-<major>-backstop_<version>_amd64.deb for the selected
# PostgreSQL (BACKSTOP_PG, 15 by default; see scripts/lib.sh), into that version's Debian
# directories (/usr/lib/postgresql/<major>/lib, /usr/share/postgresql/<major>/extension, where
# Debian's and the PostgreSQL project's apt packages put PostgreSQL): the extension as `cargo
# pgrx package` lays it out, written by crates/install (the shared library, the control file, the
# version's SQL and every upgrade script), the README and the license; and backstop-cli_<version>_amd64.deb,
# the `backstop` CLI in /usr/bin, which every major's package depends on (one CLI serves every
# major, so the packages of two majors install side by side on one host). Nothing in them needs
# Rust: the library and the CLI link only the C library (Rust's standard library is static).
#
#   scripts/package.sh [OUT_DIR]      (default target/debian; BACKSTOP_PROFILE=debug packages the
#                                      quicker debug build, which is what the test suite installs)
# Prints the path of the CLI's package, then the extension's on the last line.
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
cli_root=$stage/cli
install -D -m 0755 "$target/backstop" "$cli_root/usr/bin/backstop"
if [[ $profile == release ]]; then
  strip --strip-debug "$cli_root/usr/bin/backstop" "$root$pkglibdir/backstop.so"
fi
# Documentation and license in each package, as Debian wants.
docs() {
  local doc=$1/usr/share/doc/$2
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
}
docs "$root" "$name"
docs "$cli_root" backstop-cli

# The C library version the binaries need: the newest GLIBC_x.y symbol version they reference.
glibc=$(objdump -T "$cli_root/usr/bin/backstop" "$root$pkglibdir/backstop.so" |
  grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
for binary in "$cli_root/usr/bin/backstop" "$root$pkglibdir/backstop.so"; do
  if objdump -p "$binary" | awk '/NEEDED/ { print $2 }' | grep -qv -E '^(libc|libm|libgcc_s|libpthread|libdl|librt|ld-linux[^ ]*)\.so'; then
    echo "$binary needs a library the package does not depend on:" >&2
    objdump -p "$binary" | awk '/NEEDED/ { print "  " $2 }' >&2
    exit 1
  fi
done
# control ROOT PACKAGE DEPENDS [FIELD: VALUE ...] DESCRIPTION-LINES: writes ROOT/DEBIAN/control.
control() {
  local root=$1 package=$2 depends=$3 description=$4
  shift 4
  mkdir -p "$root/DEBIAN"
  {
    echo "Package: $package"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: backstop developers <backstop@localhost>"
    echo "Installed-Size: $(du -sk "$root" | awk '{ print $1 }')"
    echo "Depends: $depends"
    for field in "$@"; do echo "$field"; done
    echo "Section: database"
    echo "Priority: optional"
    echo "Homepage: https://github.com/backstop/backstop"
    echo "$description"
  } > "$root/DEBIAN/control"
}
summary="Description: PostgreSQL backups you can prove will restore
 backstop is a PostgreSQL extension (CREATE EXTENSION backstop) with a command-line tool:
 WAL archiving to S3 or a local directory, table snapshots and guided table recovery,
 incremental base backups and point-in-time recovery, logical backups, schedules,
 retention and restore drills run by a background worker, and doctor()."
# The old per-major names shipped /usr/bin/backstop themselves.
old_names=$(for major in 15 16 17 18; do printf 'backstop-postgresql-%s, ' "$major"; done)
control "$cli_root" backstop-cli "libc6 (>= $glibc), libgcc-s1" "$summary
 .
 This package holds the backstop command (restore, wal fetch/push, verify, lists), the same
 for every PostgreSQL major version." "Replaces: ${old_names%, }"
control "$root" "$name" "postgresql-$PG_MAJOR, postgresql-client-$PG_MAJOR, backstop-cli (= $version), libc6 (>= $glibc), libgcc-s1" \
  "$summary
 .
 This package holds the extension for PostgreSQL $PG_MAJOR." \
  "Replaces: backstop-postgresql-$PG_MAJOR" "Conflicts: backstop-postgresql-$PG_MAJOR"
mkdir -p "$OUT_DIR"
cli_deb=$OUT_DIR/backstop-cli_${version}_${arch}.deb
dpkg-deb --build --root-owner-group "$cli_root" "$cli_deb" >/dev/null
echo "$cli_deb"
deb=$OUT_DIR/${name}_${version}_${arch}.deb
dpkg-deb --build --root-owner-group "$root" "$deb" >/dev/null
echo "$deb"
