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

ensure_rust() {
  command -v cargo >/dev/null || { echo "cargo is missing: this machine kind ships a Rust toolchain; nothing can install one here" >&2; exit 1; }
}

ensure_cargo_pgrx() {
  if [[ $(cargo pgrx --version 2>/dev/null) != "cargo-pgrx $PGRX_VERSION" ]]; then
    step "installing cargo-pgrx $PGRX_VERSION"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
  fi
  # Only ever against the system's PostgreSQL: a plain `cargo pgrx init` downloads and builds its own.
  if ! grep -qs "pg$PG_MAJOR = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    step "pointing pgrx at PostgreSQL $PG_MAJOR"
    cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG"
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
# The CLI is built in one cargo invocation with the extension's package and features: cargo then
# resolves the dependencies' features as it did for the extension (pgrx turns on a few in crates
# aws-sdk-s3 depends on), so the dependencies built for the extension are reused instead of being
# compiled a second time. The log says how many times aws-sdk-s3 was compiled.
install_backstop() {
  local profile=${BACKSTOP_PROFILE:-debug} log
  step "building and installing the backstop extension and CLI ($profile)"
  local release=()
  [[ $profile == release ]] && release=(--release)
  log=$(mktemp)
  cargo pgrx install "${release[@]}" --pg-config "$PG_CONFIG" 2>&1 | tee "$log"
  cargo build "${release[@]}" -p backstop-cli -p backstop --no-default-features --features "backstop/pg$PG_MAJOR" 2>&1 | tee -a "$log"
  echo "aws-sdk-s3 compiled $(grep -c 'Compiling aws-sdk-s3 ' "$log") time(s) in this build"
  rm -f "$log"
  install -m 0755 "${CARGO_TARGET_DIR:-target}/$profile/backstop" /usr/local/bin/backstop
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
    ensure_cargo_pgrx
    BACKSTOP_PROFILE=release install_backstop
  fi
}
