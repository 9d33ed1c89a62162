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

log "cargo test: building every test binary"
cargo test --workspace --exclude stayopen-frontend --no-run

# The test binaries run in two lanes at once. Most tests wait (on timers, a PostgreSQL outage, a
# browser) rather than compute: one lane alone kept the 2 cores about 40% busy. Each lane runs its
# binaries one after the other, as cargo does; a binary's namespaces and files carry its process id
# and its clouds take free ports, so the lanes never meet. Both lanes select from the whole
# workspace, so cargo resolves the same features as the build above and neither rebuilds a library
# under the other. The first lane holds cloud tests that mostly wait; the timing-bound dataplane
# tests (failover within a second, call gaps within the detection time) are all in the second,
# never beside each other. Every test binary runs even after one fails, so a run names all its
# failures at once; each lane's output is printed whole at the end.
WAITING_CLOUD_TESTS=(delivery netns_delivery alert_routing scale_out renewal alerts operations
    security_broker security_signin skeleton)
mapfile -t all_tests < <(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    if package["name"] != "stayopen-frontend":
        for target in package["targets"]:
            if "test" in target["kind"]:
                print(target["name"])')
# An empty list (python3 or cargo metadata failing inside the substitution) would silently drop
# every integration test from the second lane; a waiting test that no longer exists would make
# cargo refuse the whole first lane. Both stop the run here, saying why.
[ "${#all_tests[@]}" -gt 0 ] || die "cargo metadata listed no test targets (is python3 installed?)"
for name in "${WAITING_CLOUD_TESTS[@]}"; do
    [[ " ${all_tests[*]} " == *" $name "* ]] || die "WAITING_CLOUD_TESTS names '$name', which is no test target"
done
other_tests=()
for name in "${all_tests[@]}"; do
    [[ " ${WAITING_CLOUD_TESTS[*]} " == *" $name "* ]] || other_tests+=("--test=$name")
done
in_workspace=(--workspace --exclude stayopen-frontend --no-fail-fast)
waiting_lane() {
    cargo test "${in_workspace[@]}" "${WAITING_CLOUD_TESTS[@]/#/--test=}" -- --test-threads=4
}
other_lane() {
    local status=0
    cargo test "${in_workspace[@]}" --lib --bins "${other_tests[@]}" -- --test-threads=4 || status=1
    cargo test "${in_workspace[@]}" --doc || status=1
    return "$status"
}
LANES="$ROOT/.data/test-lanes"
rm -rf "$LANES"
mkdir -p "$LANES"
log "cargo test: two lanes (${WAITING_CLOUD_TESTS[*]} | everything else)"
waiting_lane >"$LANES/waiting.log" 2>&1 &
waiting_pid=$!
other_status=0
other_lane >"$LANES/other.log" 2>&1 || other_status=$?
waiting_status=0
wait "$waiting_pid" || waiting_status=$?
log "cargo test: the lane of waiting cloud tests (exit $waiting_status)"
cat "$LANES/waiting.log"
log "cargo test: the other lane (exit $other_status)"
cat "$LANES/other.log"
[ "$waiting_status" -eq 0 ] && [ "$other_status" -eq 0 ] \
    || die "tests failed: see 'failures:' in the lane output above ($LANES)"

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
