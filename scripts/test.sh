#!/usr/bin/env bash
# The whole test suite, on a machine that may lack the services (this is what CI runs).
#
# Tests create a fresh database per test on the Postgres at JARVIS_TEST_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/postgres, trust auth), and start their own nats-servers on free ports.
# This script installs nats-server and postgresql if missing (and Debian's chromium, node and the browser
# test's npm packages, for tests/dashboard.rs), makes sure the machine's Postgres answers
# on 127.0.0.1:5432 with trust auth for user postgres, starts the machine's NATS on 127.0.0.1:4222 if
# nothing listens there, then runs cargo test, then schemathesis against the gateway (scripts/schemathesis.sh).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$JARVIS_ROOT"

ensure_cargo
ensure_service_packages
ensure_browser_packages
ensure_browser_test_deps

# The newest cluster version under /etc/postgresql (Debian's postgresql-common layout).
cluster_version() {
  { ls /etc/postgresql 2>/dev/null || true; } | sort -V | tail -n 1
}

pg_answers() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h 127.0.0.1 -p 5432
  else
    port_open 5432
  fi
}

# Connects over TCP as postgres without a password: what the tests need.
pg_trusts_tcp() {
  command -v psql >/dev/null 2>&1 || return 0 # no client to probe with: let the tests tell
  PGCONNECT_TIMEOUT=5 psql -X -w -q -h 127.0.0.1 -p 5432 -U postgres -d postgres -c 'select 1' >/dev/null 2>&1
}

ensure_machine_postgres() {
  if pg_answers; then
    say "PostgreSQL answers on 127.0.0.1:5432"
  else
    local version
    version=$(cluster_version)
    if [ -z "$version" ]; then
      version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
      say "no PostgreSQL cluster yet: creating $version/main"
      as_root pg_createcluster "$version" main
    fi
    command -v pg_ctlcluster >/dev/null 2>&1 ||
      die "PostgreSQL does not answer on 127.0.0.1:5432 and there is no pg_ctlcluster to start it: start it yourself"
    say "starting PostgreSQL cluster $version/main"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    local waited=0
    until pg_answers; do
      [ "$waited" -ge 30 ] && die "PostgreSQL does not answer on 127.0.0.1:5432 after 30 s (see /var/log/postgresql/)"
      sleep 1
      waited=$((waited + 1))
    done
    say "PostgreSQL answers on 127.0.0.1:5432"
  fi

  if pg_trusts_tcp; then
    return 0
  fi
  # A cluster fresh from apt asks for peer/scram auth: trust loopback TCP for the tests, as the first rule.
  local version hba rule='host all all 127.0.0.1/32 trust'
  version=$(cluster_version)
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if [ -z "$version" ] || ! as_root test -f "$hba"; then
    die "psql -h 127.0.0.1 -U postgres fails and there is no $hba to fix: give user postgres trust auth on 127.0.0.1:5432, or set JARVIS_TEST_DATABASE_URL"
  fi
  say "adding '$rule' as the first rule of $hba and reloading"
  as_root sed -i "1i $rule" "$hba"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  local waited=0
  until pg_trusts_tcp; do
    [ "$waited" -ge 10 ] && die "psql -h 127.0.0.1 -U postgres -c 'select 1' still fails after editing $hba"
    sleep 1
    waited=$((waited + 1))
  done
}

if [ -n "${JARVIS_TEST_DATABASE_URL:-}" ]; then
  say "tests use JARVIS_TEST_DATABASE_URL; leaving the machine's PostgreSQL alone"
else
  ensure_machine_postgres
fi

# Tests start their own nats-servers; operators' scripts expect the machine's one on 4222.
if port_open 4222; then
  say "NATS answers on 127.0.0.1:4222"
else
  say "starting the machine's nats-server on 127.0.0.1:4222"
  nats_server=/usr/sbin/nats-server
  [ -x "$nats_server" ] || nats_server=$(command -v nats-server)
  as_root mkdir -p /var/lib/nats-server
  as_root start-stop-daemon --start --oknodo --background --exec "$nats_server" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log ||
    say "warning: could not start nats-server on 4222 (the tests do not need it)"
fi

say "cargo test --workspace --all-targets"
cargo test --workspace --all-targets

# The gateway's OpenAPI document, fuzzed by schemathesis: no request may get a 5xx.
say "schemathesis against the gateway"
scripts/schemathesis.sh
