# Shared by setup.sh and test.sh: idempotent installation of everything backstop needs.
# Installs only what is missing; a second run does nothing but check.

PG_MAJOR=15
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PGRX_VERSION=0.18.0
GARAGE_VERSION=2.5.0
DEBIAN_PACKAGES=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR sudo libclang-dev clang pkg-config build-essential)

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

# pgrx's build script finds PostgreSQL through $PGRX_HOME/config.toml. This writes the file that
# `cargo pgrx init --pg15 PATH` writes: only ever the system's PostgreSQL (a plain `cargo pgrx init`
# downloads and builds its own).
ensure_pgrx_config() {
  local config=${PGRX_HOME:-$HOME/.pgrx}/config.toml
  grep -qs "^pg$PG_MAJOR = \"$PG_CONFIG\"" "$config" && return 0
  step "pointing pgrx at PostgreSQL $PG_MAJOR"
  if command -v cargo-pgrx >/dev/null; then
    cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG"
  elif [[ -e $config ]]; then
    echo "$config does not name $PG_CONFIG: run cargo pgrx init --pg$PG_MAJOR $PG_CONFIG" >&2
    return 1
  else
    mkdir -p "$(dirname "$config")"
    printf '[configs]\npg%s = "%s"\n' "$PG_MAJOR" "$PG_CONFIG" > "$config"
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
  ensure_debian_packages
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
