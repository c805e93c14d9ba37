#!/usr/bin/env bash
# Property-based run against the gateway's OpenAPI document: schemathesis (from PyPI, installed if missing)
# generates requests for every operation and fails on any 5xx (check `not_a_server_error`).
#
# Starts `jarvis up` (private Postgres and NATS, every agent, the gateway on a free loopback port) in a
# throwaway data directory, logs in as an operator, runs schemathesis with that token, and stops everything.
# Usage: scripts/schemathesis.sh [path/to/jarvis]   (default: target/debug/jarvis, built if missing)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$JARVIS_ROOT"

jarvis=${1:-${CARGO_TARGET_DIR:-target}/debug/jarvis}
if [ ! -x "$jarvis" ]; then
  say "building jarvis"
  cargo build -p jarvis
fi
if ! command -v st >/dev/null 2>&1; then
  say "installing schemathesis from PyPI"
  python3 -m pip install --quiet schemathesis
fi

work=$(mktemp -d)
# The private Postgres runs as the postgres user when we are root: it must reach the data directory.
chmod o+x "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
hash=$(printf 'schemathesis-password\n' | "$jarvis" gateway hash-password 2>/dev/null)
cat >"$work/jarvis.toml" <<TOML
[gateway]
listen = "127.0.0.1:$port"
rate_limit_per_ip_per_sec = 0
rate_limit_per_key_per_sec = 0
access_log = false

[[gateway.users]]
username = "fuzz"
password_hash = "$hash"
role = "operator"
TOML

"$jarvis" --config "$work/jarvis.toml" --data-dir "$work/data" up >"$work/up.log" 2>&1 &
up=$!
cleanup() {
  kill -INT "$up" 2>/dev/null || true
  wait "$up" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

base="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  kill -0 "$up" 2>/dev/null || { cat "$work/up.log"; die "jarvis up exited"; }
  sleep 1
done
curl -fsS "$base/readyz" >/dev/null || { tail -n 50 "$work/up.log"; die "the gateway is not ready on $base"; }

token=$(curl -fsS -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' \
  -d '{"username":"fuzz","password":"schemathesis-password"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

say "schemathesis against $base/api/openapi.json (fails on any 5xx)"
# Left out: the SSE stream (it never ends), and the X draft commands, whose right answer here is 503: without
# an [x] section `jarvis up` runs no jarvis-x service (tests/x.rs drives them against a running one).
st run "$base/api/openapi.json" \
  --checks not_a_server_error \
  --header "Authorization: Bearer $token" \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" \
  --request-timeout 10 \
  --exclude-path /api/v1/stream \
  --exclude-path-regex '^/api/v1/commands/x/'
