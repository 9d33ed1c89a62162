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
# The cluster's Unix socket folder: a cloud the tests run inside a network namespace reaches
# PostgreSQL through it (loopback TCP does not cross namespaces).
export STAYOPEN_TEST_PG_SOCKET_DIR="$PG_DATA"

# Every cloud the tests start writes its log here (cloud/tests/common/logs.rs); see below.
export STAYOPEN_TEST_LOG_DIR="$ROOT/.data/test-logs"
rm -rf "$STAYOPEN_TEST_LOG_DIR"
mkdir -p "$STAYOPEN_TEST_LOG_DIR"

# The vendored broker's own unit tests (its router's topic matching among them: STAYOPEN-PATCH.md).
# It sits outside the workspace (a [patch] of crates.io's rumqttd), so it has its own lock file.
log "cargo test (vendored rumqttd)"
cargo test --locked --manifest-path third_party/rumqttd/Cargo.toml --lib

log "cargo test"
# Every test binary runs even after one fails, so a run names all its failures at once.
cargo test --workspace --exclude stayopen-frontend --no-fail-fast -- --test-threads=4

# No secret may reach a log line: after the whole run, no log of any cloud the tests started may
# hold a JWT (access token) or a refresh (sor_), API (sot_), enrolment (soe_) token or stream
# ticket (sos_) — the shapes of cloud/src/domain/access and domain/enrolment/tokens.rs.
log "no token in the logs of the test run"
[ -n "$(ls -A "$STAYOPEN_TEST_LOG_DIR")" ] || die "the tests wrote no logs to $STAYOPEN_TEST_LOG_DIR"
TOKEN_SHAPES='eyJ[A-Za-z0-9_-]+\.eyJ|so[rtes]_[0-9a-f]{16,}'
leaks="$(grep -rEnoa "$TOKEN_SHAPES" "$STAYOPEN_TEST_LOG_DIR" || true)"
if [ -n "$leaks" ]; then
  printf '%s\n' "$leaks" | head -20 >&2
  die "the logs above hold secrets (files in $STAYOPEN_TEST_LOG_DIR)"
fi

log "packaging: the appliance's .deb installed and started, units, compose file and manifests"
bash "$ROOT/infra/scripts/check-packaging.sh"

# The README's first command, end to end, as on a fresh machine without the optional tools: wasm-opt,
# Chromium and ChromeDriver hidden from PATH. Its own ports, cluster and folder, so it clashes with
# neither the test cluster nor a demo the user is running; both start empty every time, as in a
# fresh clone (a cluster and a fleet folder from different runs would not know each other).
log "the demo (demo.sh --check), without wasm-opt, chromium and chromedriver on PATH"
stop_pg "$ROOT/.data/pg-democheck"
rm -rf "$ROOT/.data/pg-democheck" "$ROOT/.data/demo-check"
shadow_path="$(path_without wasm-opt chromium chromedriver)"
demo_status=0
env -u DATABASE_URL -u STAYOPEN_DATABASE__OWNER_URL PATH="$shadow_path" \
    STAYOPEN_HTTP__LISTEN=127.0.0.1:18080 STAYOPEN_BROKER__LISTEN=127.0.0.1:18883 \
    STAYOPEN_DEMO_RELAY_LISTEN=127.0.0.1:15820 STAYOPEN_DEMO_RELAY_HTTP=127.0.0.1:19810 \
    STAYOPEN_DEMO_RELAY_TUN=so-check-relay \
    STAYOPEN_DEMO_PG_PORT=55435 STAYOPEN_DEMO_PG_DATA="$ROOT/.data/pg-democheck" \
    STAYOPEN_DEMO_DIR="$ROOT/.data/demo-check" \
    bash infra/scripts/demo.sh --check || demo_status=$?
rm -rf "$shadow_path"
[ "$demo_status" -eq 0 ] || die "the demo check failed (exit $demo_status)"
# The demo's cloud and fleet logs, after sign-ins, enrolments and the dashboard's requests: no secret.
leaks="$(grep -rEnoa "$TOKEN_SHAPES" "$ROOT/.data/demo-check"/*.log || true)"
if [ -n "$leaks" ]; then
  printf '%s\n' "$leaks" | head -20 >&2
  die "the demo's logs above hold secrets"
fi

log "all checks passed"
