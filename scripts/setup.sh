#!/usr/bin/env bash
# Fresh Debian/Ubuntu machine with Rust → a running Jarvis.
#
# Installs nats-server and postgresql when their binaries are missing, builds the release binary, and runs
# `jarvis up`, which (with no JARVIS_DATABASE_URL / JARVIS_NATS_URL set) starts a private nats-server and a
# private Postgres cluster under ./.jarvis and stops them when it exits (Ctrl-C).
# Arguments are passed to `jarvis up`, e.g. `bash scripts/setup.sh --data-dir /var/lib/jarvis`.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$JARVIS_ROOT"

ensure_cargo
ensure_service_packages

say "building target/release/jarvis (the first build takes minutes)"
cargo build --release -p jarvis

say "starting jarvis up (Ctrl-C stops it and its servers)"
exec target/release/jarvis up "$@"
