#!/usr/bin/env bash
# Starts the whole system on embedded defaults: a private PostgreSQL cluster (unless DATABASE_URL is
# set), the cloud with its embedded MQTT broker and the dashboard on http://127.0.0.1:8080, the demo
# MSP with two practices, and a simulated fleet of 20 appliances. Ctrl-C stops everything.
#
# `demo.sh --check` (or STAYOPEN_DEMO_CHECK=1) starts the same, then waits (at most
# STAYOPEN_DEMO_CHECK_TIMEOUT seconds, 180 by default) until the dashboard is served, the demo login
# signs in and the cloud's API counts every simulated appliance online, then (at most
# STAYOPEN_DEMO_DRILL_TIMEOUT seconds, 300 by default) until the scheduled drills have recorded one
# that passed with a measured switchover and one that failed naming an unreachable application; it
# prints a summary, stops everything and exits 0, or says which check failed, shows the logs' tails
# and exits 1.
#
# Environment: STAYOPEN_HTTP__LISTEN and STAYOPEN_BROKER__LISTEN (the cloud's addresses),
# STAYOPEN_DEMO_PG_PORT and STAYOPEN_DEMO_PG_DATA (the private cluster), STAYOPEN_DEMO_DIR (seed,
# device CA, logs, the fleet's state), STAYOPEN_DEMO_FLEET_SIZE.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

CHECK="${STAYOPEN_DEMO_CHECK:-0}"
for arg in "$@"; do
    case "$arg" in
        --check) CHECK=1 ;;
        -h | --help) sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument: $arg (usage: demo.sh [--check])" ;;
    esac
done
[ "$CHECK" = 1 ] || [ "$CHECK" = 0 ] || die "STAYOPEN_DEMO_CHECK must be 0 or 1, not '$CHECK'"

HTTP_ADDR="${STAYOPEN_HTTP__LISTEN:-127.0.0.1:8080}"
BROKER_ADDR="${STAYOPEN_BROKER__LISTEN:-127.0.0.1:8883}"
FLEET_SIZE="${STAYOPEN_DEMO_FLEET_SIZE:-20}"
PG_PORT="${STAYOPEN_DEMO_PG_PORT:-55432}"
PG_DIR="${STAYOPEN_DEMO_PG_DATA:-$ROOT/.data/pg}"
DEMO_DIR="${STAYOPEN_DEMO_DIR:-$ROOT/.data/demo}"
CHECK_TIMEOUT="${STAYOPEN_DEMO_CHECK_TIMEOUT:-180}"
# A scheduled drill starts within a minute of the sweep, lasts 60 s and then fails back.
DRILL_TIMEOUT="${STAYOPEN_DEMO_DRILL_TIMEOUT:-300}"
START=$(date +%s)

ensure_deps
log "building the cloud, the appliance agent and the fleet simulator"
cargo build -p stayopen-cloud -p stayopen-appliance -p stayopen-testkit \
    --bin stayopen-cloud --bin stayopen-appliance --bin stayopen-fleet-sim
log "building the dashboard (wasm)"
"$ROOT/infra/scripts/build-frontend.sh"

# Another demo (or anything else) on the cloud's ports would answer in this one's place.
port_in_use() { # $1 = host:port
    (: <>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}
for addr in "$HTTP_ADDR" "$BROKER_ADDR"; do
    if port_in_use "$addr"; then
        die "$addr is already in use (another demo running?); stop it, or set STAYOPEN_HTTP__LISTEN / STAYOPEN_BROKER__LISTEN"
    fi
done

PIDS=()
cleanup() {
    trap - INT TERM EXIT
    log "stopping"
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    stop_pg
}
trap cleanup EXIT
# Exiting runs the EXIT trap; a signal must not let the script carry on after cleaning up.
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${DATABASE_URL:-}" ]; then
    start_pg "$PG_DIR" "$PG_PORT"
    create_db stayopen
    ensure_app_role
    # The cloud serves as the non-owner application role (row-level security applies to it) and
    # migrates as the owner.
    export DATABASE_URL="postgres://stayopen_app@127.0.0.1:$PG_PORT/stayopen"
    export STAYOPEN_DATABASE__OWNER_URL="${DATABASE_ADMIN_URL%/postgres}/stayopen"
fi

BIN="$CARGO_TARGET_DIR/debug"
mkdir -p "$DEMO_DIR"
"$BIN/stayopen-cloud" migrate
"$BIN/stayopen-cloud" seed-demo --out "$DEMO_DIR/seed.json"

export STAYOPEN_HTTP__LISTEN="$HTTP_ADDR"
export STAYOPEN_BROKER__LISTEN="$BROKER_ADDR"
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

"$BIN/stayopen-fleet-sim" --api-url "http://$HTTP_ADDR" --seed-file "$DEMO_DIR/seed.json" \
    --count "$FLEET_SIZE" --state-root "$DEMO_DIR/fleet" > "$DEMO_DIR/fleet.log" 2>&1 &
PIDS+=($!)

EMAIL=$(sed -n 's/.*"email": "\(.*\)".*/\1/p' "$DEMO_DIR/seed.json")
PASSWORD=$(sed -n 's/.*"password": "\(.*\)".*/\1/p' "$DEMO_DIR/seed.json")
LOGS="${DEMO_DIR#"$ROOT"/}/cloud.log, ${DEMO_DIR#"$ROOT"/}/fleet.log"
cat <<MSG

  StayOpen is running (started in $(( $(date +%s) - START )) s).

    Dashboard:  http://$HTTP_ADDR
    Login:      $EMAIL / $PASSWORD
    Fleet:      $FLEET_SIZE simulated appliances enrolling and reporting over MQTT
    Logs:       $LOGS

MSG

if [ "$CHECK" = 0 ]; then
    printf '  Press Ctrl-C to stop everything (PostgreSQL included).\n\n'
    wait -n "${PIDS[@]}" || true
    exit 0
fi

# --- Check mode: the same system, checked through its real API, then stopped. ---

# Prints field $1 of the JSON object on stdin (nothing, and fails, when it is not there).
json_field() {
    /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1" 2>/dev/null
}

check_failed() {
    printf '\n\033[1;31merror:\033[0m demo check failed after %s s: %s\n' "$(( $(date +%s) - CHECK_START ))" "$1" >&2
    log "last lines of ${DEMO_DIR#"$ROOT"/}/cloud.log:"
    tail -n 40 "$DEMO_DIR/cloud.log" >&2 || true
    log "last lines of ${DEMO_DIR#"$ROOT"/}/fleet.log:"
    tail -n 40 "$DEMO_DIR/fleet.log" >&2 || true
    exit 1
}

log "checking the demo: dashboard, login as $EMAIL, $FLEET_SIZE appliances online (at most $CHECK_TIMEOUT s)"
CHECK_START=$(date +%s)
DEADLINE=$(( CHECK_START + CHECK_TIMEOUT ))
API="http://$HTTP_ADDR/api/v1"
LOGIN_BODY="$(/usr/bin/python3 -c 'import json, sys; print(json.dumps({"email": sys.argv[1], "password": sys.argv[2]}))' \
    "$EMAIL" "$PASSWORD")"
dashboard_ok=0 token="" totals="" online="" appliances="" problem="not checked yet"
while :; do
    kill -0 "${PIDS[0]}" 2>/dev/null || check_failed "the cloud exited"
    kill -0 "${PIDS[1]}" 2>/dev/null || check_failed "the fleet simulator exited"

    if [ "$dashboard_ok" = 0 ]; then
        dashboard_ok=1
        for file in "" stayopen_frontend.js stayopen_frontend_bg.wasm; do
            if ! curl -fsS --max-time 10 -o /dev/null "http://$HTTP_ADDR/$file" 2>/dev/null; then
                dashboard_ok=0
                problem="the dashboard is not served: GET http://$HTTP_ADDR/$file fails"
                break
            fi
        done
    fi

    if [ "$dashboard_ok" = 1 ] && [ -z "$token" ]; then
        response=""
        if response="$(curl -sS --max-time 10 --fail-with-body -H 'Content-Type: application/json' \
                --data "$LOGIN_BODY" "$API/auth/login" 2>&1)" \
            && token="$(json_field access_token <<<"$response")" && [ -n "$token" ]; then
            log "signed in as $EMAIL"
        else
            token=""
            problem="signing in as $EMAIL failed: ${response:-no response}"
        fi
    fi

    if [ -n "$token" ]; then
        totals=""
        if totals="$(curl -sS --max-time 10 --fail-with-body -H "Authorization: Bearer $token" \
                "$API/fleet/totals" 2>&1)" \
            && online="$(json_field online <<<"$totals")" \
            && appliances="$(json_field appliances <<<"$totals")"; then
            if [ "$online" -ge "$FLEET_SIZE" ]; then
                break
            fi
            problem="$online of $FLEET_SIZE appliances online ($appliances enrolled)"
        else
            problem="GET /api/v1/fleet/totals failed: ${totals:-no response}"
            # An expired or refused token: sign in again on the next round.
            case "$totals" in *401*|*403*) token="" ;; esac
        fi
    fi

    [ "$(date +%s)" -lt "$DEADLINE" ] || check_failed "$problem"
    sleep 2
done

log "$online of $FLEET_SIZE appliances online; waiting for the scheduled drills: one that passes and one that fails for a reason an officer can read (at most $DRILL_TIMEOUT s)"
# The seed schedules a daily drill in the hour starting now; every fourth simulated appliance's LTE
# backup cannot reach the lab interface, so its drill fails and names it.
DRILL_DEADLINE=$(( $(date +%s) + DRILL_TIMEOUT ))
drills_summary=""
while :; do
    kill -0 "${PIDS[0]}" 2>/dev/null || check_failed "the cloud exited"
    kill -0 "${PIDS[1]}" 2>/dev/null || check_failed "the fleet simulator exited"
    drills=""
    if drills="$(curl -sS --max-time 10 --fail-with-body -H "Authorization: Bearer $token" \
            "$API/drills?limit=100" 2>&1)" \
        && drills_summary="$(/usr/bin/python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
passed = [d for d in items if d["outcome"] == "passed" and d.get("switchover_ms") is not None]
failed = [d for d in items if d["outcome"] == "failed" and "unreachable" in d["reason"]]
if passed and failed:
    print("%d drills passed (switchover %d ms), %d failed: %s" % (len(passed), passed[0]["switchover_ms"], len(failed), failed[0]["reason"]))
' <<<"$drills")" && [ -n "$drills_summary" ]; then
        break
    fi
    problem="no passed and failed scheduled drills yet (GET /api/v1/drills: ${drills:0:200})"
    [ "$(date +%s)" -lt "$DRILL_DEADLINE" ] || check_failed "$problem"
    sleep 3
done
log "drills: $drills_summary"

printf '\n'
log "demo check passed in $(( $(date +%s) - START )) s: dashboard served, signed in as $EMAIL, $online of $FLEET_SIZE appliances online ($appliances enrolled), scheduled drills recorded, at http://$HTTP_ADDR"
exit 0
