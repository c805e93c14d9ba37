# shellcheck shell=bash
# Helpers shared by scripts/setup.sh and scripts/test.sh. Source it; it runs nothing by itself.
# Targets Debian and Ubuntu: services come from their packages (nats-server, postgresql).

# Repository root: the parent of this file's directory.
# shellcheck disable=SC2034 # used by the scripts that source this file
JARVIS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# A progress line on stderr.
say() {
  printf '==> %s\n' "$*" >&2
}

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Runs a command as root: directly when we are root, else through sudo when there is one.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root for: $* (run this script as root, or install sudo)"
  fi
}

have_nats_server() {
  [ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1
}

# PostgreSQL's server binaries live in /usr/lib/postgresql/<version>/bin, which is not on PATH.
have_postgres_server() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

# Installs nats-server and/or postgresql with apt-get when their binaries are missing.
ensure_service_packages() {
  local packages=()
  have_nats_server || packages+=(nats-server)
  have_postgres_server || packages+=(postgresql)
  if [ ${#packages[@]} -eq 0 ]; then
    say "nats-server and PostgreSQL are installed"
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 ||
    die "missing ${packages[*]} and there is no apt-get: install them with your package manager"
  say "installing ${packages[*]} with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"
}

# The dashboard's browser test: Debian's Chromium (+ ChromeDriver), and Node.js with npm to run playwright-core.
# Installs what is missing with apt-get; never downloads a browser build of its own.
ensure_browser_packages() {
  local packages=()
  [ -x /usr/bin/chromium ] || packages+=(chromium)
  [ -x /usr/bin/chromedriver ] || packages+=(chromium-driver)
  command -v node >/dev/null 2>&1 || packages+=(nodejs)
  command -v npm >/dev/null 2>&1 || packages+=(npm)
  if [ ${#packages[@]} -eq 0 ]; then
    say "chromium, chromedriver, node and npm are installed"
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 ||
    die "missing ${packages[*]} and there is no apt-get: install them with your package manager"
  say "installing ${packages[*]} with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"
}

# playwright-core for tests/browser (exact versions from its package-lock.json; it drives /usr/bin/chromium and
# downloads no browser).
ensure_browser_test_deps() {
  say "npm ci in tests/browser"
  (cd "$JARVIS_ROOT/tests/browser" && npm ci --no-audit --no-fund --loglevel=error)
}

# Makes cargo reachable (rustup installs it in ~/.cargo/bin, which a fresh shell may not have on PATH).
ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    export PATH
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    printf 'error: cargo not found. Install Rust with rustup (https://rustup.rs):\n' >&2
    printf "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh\n" >&2
    exit 1
  fi
}

# Whether something accepts TCP connections on 127.0.0.1:<port>.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
