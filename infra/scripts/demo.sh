#!/usr/bin/env bash
# Starts the whole system on embedded defaults: a private PostgreSQL cluster (unless DATABASE_URL is
# set), the cloud with its embedded MQTT broker and the dashboard on http://127.0.0.1:8080, the demo
# MSP with two practices, and a simulated fleet of 20 appliances. Ctrl-C stops everything.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

HTTP_ADDR="${STAYOPEN_HTTP__LISTEN:-127.0.0.1:8080}"
FLEET_SIZE="${STAYOPEN_DEMO_FLEET_SIZE:-20}"
DEMO_DIR="$ROOT/.data/demo"
START=$(date +%s)

ensure_deps
log "building the cloud and the appliance agent"
cargo build --bin stayopen-cloud --bin stayopen-appliance
log "building the dashboard (wasm)"
"$ROOT/infra/scripts/build-frontend.sh"

PIDS=()
cleanup() {
    trap - INT TERM EXIT
    log "stopping"
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    stop_pg
}
trap cleanup INT TERM EXIT

if [ -z "${DATABASE_URL:-}" ]; then
    start_pg "$ROOT/.data/pg" "${STAYOPEN_DEMO_PG_PORT:-55432}"
    create_db stayopen
    ensure_app_role
    # The cloud serves as the non-owner application role (row-level security applies to it) and
    # migrates as the owner.
    export DATABASE_URL="postgres://stayopen_app@127.0.0.1:${STAYOPEN_DEMO_PG_PORT:-55432}/stayopen"
    export STAYOPEN_DATABASE__OWNER_URL="${DATABASE_ADMIN_URL%/postgres}/stayopen"
fi

BIN="$CARGO_TARGET_DIR/debug"
mkdir -p "$DEMO_DIR"
"$BIN/stayopen-cloud" migrate
"$BIN/stayopen-cloud" seed-demo --out "$DEMO_DIR/seed.json"

export STAYOPEN_HTTP__LISTEN="$HTTP_ADDR"
export STAYOPEN_HTTP__STATIC_DIR="$ROOT/frontend/dist"
# The device CA (created on the first run) and the broker's TLS certificate.
export STAYOPEN_BROKER__TLS_DIR="$DEMO_DIR/pki"
"$BIN/stayopen-cloud" serve > "$DEMO_DIR/cloud.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
    curl -fsS "http://$HTTP_ADDR/readyz" >/dev/null 2>&1 && break
    kill -0 "${PIDS[0]}" 2>/dev/null || { tail -n 30 "$DEMO_DIR/cloud.log" >&2; die "the cloud did not start"; }
    sleep 0.2
done
curl -fsS "http://$HTTP_ADDR/readyz" >/dev/null || die "the cloud is not ready; see $DEMO_DIR/cloud.log"

"$BIN/stayopen-appliance" simulate-fleet --api-url "http://$HTTP_ADDR" --seed-file "$DEMO_DIR/seed.json" \
    --count "$FLEET_SIZE" --state-root "$DEMO_DIR/fleet" > "$DEMO_DIR/fleet.log" 2>&1 &
PIDS+=($!)

EMAIL=$(sed -n 's/.*"email": "\(.*\)".*/\1/p' "$DEMO_DIR/seed.json")
PASSWORD=$(sed -n 's/.*"password": "\(.*\)".*/\1/p' "$DEMO_DIR/seed.json")
cat <<MSG

  StayOpen is running (started in $(( $(date +%s) - START )) s).

    Dashboard:  http://$HTTP_ADDR
    Login:      $EMAIL / $PASSWORD
    Fleet:      $FLEET_SIZE simulated appliances enrolling and reporting over MQTT
    Logs:       .data/demo/cloud.log, .data/demo/fleet.log

  Press Ctrl-C to stop everything (PostgreSQL included).

MSG
wait -n "${PIDS[@]}" || true
