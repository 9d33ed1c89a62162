#!/usr/bin/env bash
# Every check the project has: formatting, lints, unit and integration tests against a real
# PostgreSQL and the real MQTT broker, the frontend's wasm build and tests, the browser test, and
# the failover tests in network namespaces (root).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_deps browser netns mqtt smtp
trap stop_pg EXIT

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (host crates)"
cargo clippy --all-targets -- -D warnings
log "cargo clippy (frontend, wasm32)"
cargo clippy -p stayopen-frontend --target wasm32-unknown-unknown --all-targets -- -D warnings

log "frontend unit tests (wasm32 under Node)"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    cargo test -p stayopen-frontend --target wasm32-unknown-unknown

log "building the dashboard (wasm)"
"$ROOT/infra/scripts/build-frontend.sh"

start_pg "$ROOT/.data/pg-test" "${STAYOPEN_TEST_PG_PORT:-55433}"
ensure_app_role
export STAYOPEN_TEST_DATABASE_URL="$DATABASE_ADMIN_URL"
export STAYOPEN_TEST_STATIC_DIR="$ROOT/frontend/dist"

log "cargo test"
cargo test --workspace --exclude stayopen-frontend -- --test-threads=4
log "all checks passed"
