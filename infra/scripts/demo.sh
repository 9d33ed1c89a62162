#!/usr/bin/env bash
# Starts the whole system on embedded defaults: a private PostgreSQL cluster (unless DATABASE_URL is
# set), the cloud with its embedded MQTT broker and the dashboard on http://127.0.0.1:8080, the demo
# MSP with two practices, and a simulated fleet of 20 appliances. Ctrl-C stops everything.
#
# `demo.sh --check` (or STAYOPEN_DEMO_CHECK=1) starts the same, then waits (at most
# STAYOPEN_DEMO_CHECK_TIMEOUT seconds, 180 by default) until the dashboard is served, the demo login
# signs in and the cloud's API counts every simulated appliance online, the relay holds every
# appliance's key and every appliance reports its tunnel up, then (at most
# STAYOPEN_DEMO_DRILL_TIMEOUT seconds, 300 by default) until the scheduled drills have recorded one
# that passed with a measured switchover and one that failed naming an unreachable application; it
# prints a summary, stops everything and exits 0, or says which check failed, shows the logs' tails
# and exits 1.
#
# Environment: STAYOPEN_HTTP__LISTEN and STAYOPEN_BROKER__LISTEN (the cloud's addresses),
# STAYOPEN_DEMO_PG_PORT and STAYOPEN_DEMO_PG_DATA (the private cluster), STAYOPEN_DEMO_DIR (seed,
# device CA, logs, the fleet's state, the relay's key and token), STAYOPEN_DEMO_FLEET_SIZE,
# STAYOPEN_DEMO_RELAY_LISTEN, STAYOPEN_DEMO_RELAY_HTTP and STAYOPEN_DEMO_RELAY_TUN (the relay).
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
# The demo relay: its WireGuard socket, and its /healthz and /metrics.
RELAY_ADDR="${STAYOPEN_DEMO_RELAY_LISTEN:-127.0.0.1:51820}"
RELAY_HTTP="${STAYOPEN_DEMO_RELAY_HTTP:-127.0.0.1:9810}"
RELAY_TUN="${STAYOPEN_DEMO_RELAY_TUN:-so-demo-relay}"
BROKER_ADDR="${STAYOPEN_BROKER__LISTEN:-127.0.0.1:8883}"
FLEET_SIZE="${STAYOPEN_DEMO_FLEET_SIZE:-20}"
PG_PORT="${STAYOPEN_DEMO_PG_PORT:-55432}"
PG_DIR="${STAYOPEN_DEMO_PG_DATA:-$ROOT/.data/pg}"
DEMO_DIR="${STAYOPEN_DEMO_DIR:-$ROOT/.data/demo}"
CHECK_TIMEOUT="${STAYOPEN_DEMO_CHECK_TIMEOUT:-180}"
# A scheduled drill starts within a minute of the sweep, lasts 60 s and then fails back.
DRILL_TIMEOUT="${STAYOPEN_DEMO_DRILL_TIMEOUT:-300}"
START=$(date +%s)

ensure_deps netns
log "building the cloud, the appliance agent, the relay and the fleet simulator"
cargo build -p stayopen-cloud -p stayopen-appliance -p stayopen-testkit -p stayopen-tunnel \
    --bin stayopen-cloud --bin stayopen-appliance --bin stayopen-fleet-sim --bin stayopen-relay
log "building the dashboard (wasm)"
"$ROOT/infra/scripts/build-frontend.sh"

# Another demo (or anything else) on the cloud's ports would answer in this one's place.
port_in_use() { # $1 = host:port
    (: <>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}
for addr in "$HTTP_ADDR" "$BROKER_ADDR" "$RELAY_HTTP"; do
    if port_in_use "$addr"; then
        die "$addr is already in use (another demo running?); stop it, or set STAYOPEN_HTTP__LISTEN / STAYOPEN_BROKER__LISTEN"
    fi
done

PIDS=()
# The relay turns IP forwarding on; the demo puts it back as it found it.
IP_FORWARD_BEFORE="$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || echo 0)"
cleanup() {
    trap - INT TERM EXIT
    log "stopping"
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    sysctl -qw "net.ipv4.ip_forward=$IP_FORWARD_BEFORE" 2>/dev/null || true
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

# The relay every appliance's session-safe tunnel ends at, registered with the cloud, which hands it
# its peers (each appliance's WireGuard key and inner address) and each appliance its relay. The
# demo's appliances are simulated: their tunnels report through the real decision logic over
# simulated links; the relay's peer list, the assignment and the policies are real.
RELAY_DIR="$DEMO_DIR/relay"
mkdir -p "$RELAY_DIR"
cat > "$RELAY_DIR/relay.toml" <<TOML
listen = "$RELAY_ADDR"
private_key_file = "relay.key"
tun_name = "$RELAY_TUN"
inner_network = "100.96.0.0/12"
public_interface = "lo"
http_listen = "$RELAY_HTTP"

[cloud]
url = "http://$HTTP_ADDR"
token_file = "relay.token"
poll_secs = 2
TOML
RELAY_KEY="$("$BIN/stayopen-relay" public-key --config "$RELAY_DIR/relay.toml")" \
    || die "the relay's key could not be read or created in $RELAY_DIR"
# A relay is registered once per key and database; a later run reuses its token. Any other active
# registration of the same key (a run whose token was lost) is revoked, so its appliances move here.
RELAY_NAME="$(cat "$RELAY_DIR/relay.name" 2>/dev/null || true)"
relays_of_key() {
    "$BIN/stayopen-cloud" admin relay-list 2>/dev/null \
        | awk -v key="$RELAY_KEY" '$3 == key && $NF == "active" { print $1 }'
}
if [ -z "$RELAY_NAME" ] \
    || [ "$(grep -cxE 'sor_[0-9a-f]+' "$RELAY_DIR/relay.token" 2>/dev/null)" != 1 ] \
    || [ "$(wc -l < "$RELAY_DIR/relay.token")" != 1 ] \
    || ! relays_of_key | grep -qxF "$RELAY_NAME"; then
    RELAY_NAME="demo-relay-$START"
    "$BIN/stayopen-cloud" admin relay-add --name "$RELAY_NAME" --endpoint "$RELAY_ADDR" \
        --public-key "$RELAY_KEY" 2>> "$DEMO_DIR/cloud.log" | grep -E '^sor_' > "$RELAY_DIR/relay.token" \
        || die "registering the demo relay failed; see $DEMO_DIR/cloud.log"
    printf '%s\n' "$RELAY_NAME" > "$RELAY_DIR/relay.name"
fi
for stale in $(relays_of_key); do
    [ "$stale" = "$RELAY_NAME" ] \
        || "$BIN/stayopen-cloud" admin relay-revoke --name "$stale" >/dev/null 2>> "$DEMO_DIR/cloud.log"
done
"$BIN/stayopen-relay" serve --config "$RELAY_DIR/relay.toml" > "$DEMO_DIR/relay.log" 2>&1 &
PIDS+=($!)
RELAY_PID=$!

"$BIN/stayopen-fleet-sim" --api-url "http://$HTTP_ADDR" --seed-file "$DEMO_DIR/seed.json" \
    --count "$FLEET_SIZE" --state-root "$DEMO_DIR/fleet" > "$DEMO_DIR/fleet.log" 2>&1 &
PIDS+=($!)
FLEET_PID=$!

EMAIL=$(sed -n 's/.*"email": "\(.*\)".*/\1/p' "$DEMO_DIR/seed.json")
PASSWORD=$(sed -n 's/.*"password": "\(.*\)".*/\1/p' "$DEMO_DIR/seed.json")
LOGS="${DEMO_DIR#"$ROOT"/}/cloud.log, ${DEMO_DIR#"$ROOT"/}/fleet.log, ${DEMO_DIR#"$ROOT"/}/relay.log"
cat <<MSG

  StayOpen is running (started in $(( $(date +%s) - START )) s).

    Dashboard:  http://$HTTP_ADDR
    Login:      $EMAIL / $PASSWORD
    Fleet:      $FLEET_SIZE simulated appliances enrolling and reporting over MQTT
    Relay:      $RELAY_ADDR (WireGuard), http://$RELAY_HTTP/healthz and /metrics
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
    log "last lines of ${DEMO_DIR#"$ROOT"/}/relay.log:"
    tail -n 20 "$DEMO_DIR/relay.log" >&2 || true
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
    kill -0 "$FLEET_PID" 2>/dev/null || check_failed "the fleet simulator exited"
    kill -0 "$RELAY_PID" 2>/dev/null || check_failed "the relay exited"

    if [ "$dashboard_ok" = 0 ]; then
        dashboard_ok=1
        # boot.js names the build's folder (/app-<hash>/stayopen_frontend.js, build-frontend.sh).
        app="$(curl -fsS --max-time 10 "http://$HTTP_ADDR/boot.js" 2>/dev/null \
            | sed -n "s#.*'/\(app-[0-9a-f]*\)/stayopen_frontend.js'.*#\1#p")" || app=""
        for file in "" boot.js "$app/stayopen_frontend.js" "$app/stayopen_frontend_bg.wasm" \
                "$app/__wasm_split.js"; do
            if [ -z "$app" ] || ! curl -fsS --max-time 10 -o /dev/null "http://$HTTP_ADDR/$file" 2>/dev/null; then
                dashboard_ok=0
                problem="the dashboard is not served: GET http://$HTTP_ADDR/$file fails (boot.js names '${app:-no build folder}')"
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

log "$online of $FLEET_SIZE appliances online; waiting for the relay to hold every appliance's key and every tunnel to be up"
tunnels_summary=""
while :; do
    kill -0 "$RELAY_PID" 2>/dev/null || check_failed "the relay exited"
    health="$(curl -sS --max-time 5 "http://$RELAY_HTTP/healthz" 2>&1 || true)"
    listed="$(curl -sS --max-time 10 --fail-with-body -H "Authorization: Bearer $token" \
        "$API/appliances?limit=100" 2>&1 || true)"
    if tunnels_summary="$(/usr/bin/python3 -c '
import json, sys
health, listed, size = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
up = [a for a in listed["items"] if (a.get("tunnel") or {}).get("state") == "up"]
if health["peers"] >= size and len(up) >= size:
    print("relay holds %d peers; %d tunnels up through %s" % (health["peers"], len(up), up[0]["tunnel"]["relay"]))
' "$health" "$listed" "$FLEET_SIZE" 2>/dev/null)" && [ -n "$tunnels_summary" ]; then
        break
    fi
    problem="the relay or the tunnels are not ready (relay /healthz: ${health:0:120})"
    [ "$(date +%s)" -lt "$DEADLINE" ] || check_failed "$problem"
    sleep 2
done
log "tunnels: $tunnels_summary"

log "waiting for the scheduled drills: one that passes and one that fails for a reason an officer can read (at most $DRILL_TIMEOUT s)"
# The seed schedules a daily drill in the hour starting now; every fourth simulated appliance's LTE
# backup cannot reach the lab interface, so its drill fails and names it.
DRILL_DEADLINE=$(( $(date +%s) + DRILL_TIMEOUT ))
drills_summary=""
while :; do
    kill -0 "${PIDS[0]}" 2>/dev/null || check_failed "the cloud exited"
    kill -0 "$FLEET_PID" 2>/dev/null || check_failed "the fleet simulator exited"
    kill -0 "$RELAY_PID" 2>/dev/null || check_failed "the relay exited"
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
log "demo check passed in $(( $(date +%s) - START )) s: dashboard served, signed in as $EMAIL, $online of $FLEET_SIZE appliances online ($appliances enrolled), every tunnel up through the relay, scheduled drills recorded, at http://$HTTP_ADDR"
exit 0
