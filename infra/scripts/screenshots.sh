#!/usr/bin/env bash
# Refreshes the documentation's screenshots (docs/screenshots) from the demo, not the test fleet:
# starts `demo.sh` (its PostgreSQL, cloud, relay and 20 simulated appliances) on its usual ports,
# waits for it, and has headless Chromium take each main page on a desktop and at 390 px wide
# (`cargo test -p stayopen-cloud --test dashboard demo_screenshots -- --ignored`). Stops the demo
# at the end. Needs what the test command needs (Chromium and ChromeDriver).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_deps browser
HTTP_ADDR="${STAYOPEN_HTTP__LISTEN:-127.0.0.1:8080}"
DEMO_DIR="${STAYOPEN_DEMO_DIR:-$ROOT/.data/demo}"
LOG="$(mktemp)"

setsid "$ROOT/infra/scripts/demo.sh" >"$LOG" 2>&1 &
DEMO=$!
stop_demo() {
    kill -INT -- "-$DEMO" 2>/dev/null || true
    wait "$DEMO" 2>/dev/null || true
    rm -f "$LOG"
}
trap stop_demo EXIT

log "waiting for the demo on http://$HTTP_ADDR"
for _ in $(seq 1 600); do
    if curl -fsS "http://$HTTP_ADDR/readyz" >/dev/null 2>&1 && [ -s "$DEMO_DIR/seed.json" ]; then
        break
    fi
    kill -0 "$DEMO" 2>/dev/null || { tail -n 40 "$LOG" >&2; die "the demo stopped"; }
    sleep 1
done
curl -fsS "http://$HTTP_ADDR/readyz" >/dev/null || { tail -n 40 "$LOG" >&2; die "the demo did not start"; }

log "taking the screenshots into docs/screenshots"
STAYOPEN_DEMO_URL="http://$HTTP_ADDR" STAYOPEN_DEMO_SEED="$DEMO_DIR/seed.json" \
STAYOPEN_SCREENSHOT_DIR="$ROOT/docs/screenshots" STAYOPEN_TEST_STATIC_DIR="$ROOT/frontend/dist" \
    cargo test -p stayopen-cloud --test dashboard demo_screenshots -- --ignored --nocapture
log "screenshots refreshed: $(ls "$ROOT/docs/screenshots" | wc -l) files in docs/screenshots"
