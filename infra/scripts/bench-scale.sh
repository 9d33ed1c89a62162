#!/usr/bin/env bash
# The scale benchmark (issue 18): one cloud node with its embedded broker (TLS) and PostgreSQL on
# this host, and N light simulated appliances from the load generator (`stayopen-loadgen`), both
# release builds. Prints the enrolment storm (enrolments/s), the connect storm (seconds until all N
# are connected), the cloud's resident memory and CPU seconds, the messages/s stored during the
# steady phase, and the loss: every telemetry message and event the broker acknowledged (PUBACK)
# looked up by message id in PostgreSQL (lost = not there, duplicated = there twice).
#
#   infra/scripts/bench-scale.sh [--appliances N] [--instances M]   (defaults 10000 and 1)
#
# With --instances 2 or more: M cloud instances on one database behind HAProxy (the generator
# enrols through it), each with its own client id on Debian's Mosquitto as the external broker
# (configured as infra/mosquitto ships it: client certificates of the shared device CA, the ACL),
# ingest split between them by the shared subscription. Memory and CPU are then reported per
# process (each instance, Mosquitto).
#
# Environment: STAYOPEN_SCALE_DURATION (steady phase, s; 120), STAYOPEN_SCALE_INTERVAL (telemetry
# cadence, s; 10, the default policy's), STAYOPEN_SCALE_FAILOVERS (failovers/s across the fleet;
# N/1000), STAYOPEN_SCALE_ENROL_CONCURRENCY (32), STAYOPEN_SCALE_CONNECT_CONCURRENCY (256),
# STAYOPEN_SCALE_DRAIN (s the generator waits for the cloud's last acknowledgements; 300) and
# STAYOPEN_SCALE_SETTLE (s the script then waits for PostgreSQL to hold every acknowledged
# message, a backlog still draining; 300),
# STAYOPEN_BENCH_PG_PORT (55437), STAYOPEN_SCALE_HTTP (127.0.0.1:18080), STAYOPEN_SCALE_BROKER
# (127.0.0.1:18883), STAYOPEN_SCALE_DIR (.data/bench-scale: logs, the report, the device CA),
# STAYOPEN_SCALE_BIN (a folder holding release builds of both binaries: no build).
#
# What the defaults would stop, raised here by configuration: the open-files limit (`ulimit -n`,
# one socket per appliance in each of the cloud and the generator; 1024 by default on Debian,
# 20000 on this machine) is raised to N + 4096 when lower; an enrolment token enrols at most 1000 appliances, so the script
# makes one per thousand; the cloud's database pool is raised from 10 to 20
# (STAYOPEN_DATABASE__MAX_CONNECTIONS). The embedded broker's own limits (20,000 connections, 4 per
# device: `cloud/src/infra/broker.rs` GateLimits) fit 10,000 appliances as they are.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

APPLIANCES="${STAYOPEN_SCALE_APPLIANCES:-10000}"
INSTANCES="${STAYOPEN_SCALE_INSTANCES:-1}"
while [ $# -gt 0 ]; do
    case "$1" in
        --appliances) [ $# -ge 2 ] || die "--appliances needs a number"; APPLIANCES="$2"; shift 2 ;;
        --appliances=*) APPLIANCES="${1#*=}"; shift ;;
        --instances) [ $# -ge 2 ] || die "--instances needs a number"; INSTANCES="$2"; shift 2 ;;
        --instances=*) INSTANCES="${1#*=}"; shift ;;
        -h | --help) sed -n '2,30s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument: $1 (usage: bench-scale.sh [--appliances N] [--instances M])" ;;
    esac
done
[[ "$APPLIANCES" =~ ^[1-9][0-9]*$ ]] || die "--appliances must be a positive number, not '$APPLIANCES'"
[[ "$INSTANCES" =~ ^[1-9]$ ]] || die "--instances must be a number from 1 to 9, not '$INSTANCES'"
DURATION="${STAYOPEN_SCALE_DURATION:-120}"
INTERVAL="${STAYOPEN_SCALE_INTERVAL:-10}"
FAILOVERS="${STAYOPEN_SCALE_FAILOVERS:-$(awk -v n="$APPLIANCES" 'BEGIN { printf "%.3f", n / 1000 }')}"
ENROL_CONCURRENCY="${STAYOPEN_SCALE_ENROL_CONCURRENCY:-32}"
CONNECT_CONCURRENCY="${STAYOPEN_SCALE_CONNECT_CONCURRENCY:-256}"
DRAIN="${STAYOPEN_SCALE_DRAIN:-300}"
SETTLE="${STAYOPEN_SCALE_SETTLE:-300}"
PG_PORT="${STAYOPEN_BENCH_PG_PORT:-55437}"
HTTP_ADDR="${STAYOPEN_SCALE_HTTP:-127.0.0.1:18080}"
BROKER_ADDR="${STAYOPEN_SCALE_BROKER:-127.0.0.1:18883}"
DIR="${STAYOPEN_SCALE_DIR:-$ROOT/.data/bench-scale}"
DB=stayopen_scale

# Each of the cloud and the generator holds one socket per appliance, plus its own (PostgreSQL,
# HTTP, files); the limit is per process.
FILES=$(( APPLIANCES + 4096 ))
if [ "$(ulimit -n)" -lt "$FILES" ]; then
    ulimit -n "$FILES" 2>/dev/null || die "cannot raise the open-files limit to $FILES (ulimit -Hn is $(ulimit -Hn)); run as root or raise it"
    log "open-files limit raised to $FILES"
fi

if [ "$INSTANCES" -gt 1 ]; then
    # PostgreSQL too: ensure_deps installs the base set along with Mosquitto and HAProxy.
    { pg_bindir >/dev/null && [ -x /usr/sbin/mosquitto ] && [ -x /usr/sbin/haproxy ]; } || ensure_deps mqtt
else
    pg_bindir >/dev/null || ensure_deps
fi
PSQL="$(pg_bindir)/psql"

if [ -n "${STAYOPEN_SCALE_BIN:-}" ]; then
    BIN="$STAYOPEN_SCALE_BIN"
    [ -x "$BIN/stayopen-cloud" ] && [ -x "$BIN/stayopen-loadgen" ] || die "no stayopen-cloud and stayopen-loadgen in $BIN"
    log "using the release builds in $BIN"
else
    log "building the cloud and the load generator (release)"
    cargo build --release -p stayopen-cloud -p stayopen-testkit --bin stayopen-cloud --bin stayopen-loadgen
    BIN="$CARGO_TARGET_DIR/release"
fi

CLOUD_PIDS=()
HELPER_PIDS=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${CLOUD_PIDS[@]}" "${HELPER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    stop_pg
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_pg "$ROOT/.data/pg-bench-scale" "$PG_PORT"
ensure_app_role
# A fresh database every run: the generator's hardware identities are enrolled once per database.
PGOPTIONS='-c client_min_messages=warning' "$PSQL" "$DATABASE_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
create_db "$DB"
OWNER_URL="${DATABASE_ADMIN_URL%/postgres}/$DB"
export DATABASE_URL="postgres://stayopen_app@127.0.0.1:$PG_PORT/$DB"
export STAYOPEN_DATABASE__OWNER_URL="$OWNER_URL"
export STAYOPEN_DATABASE__MAX_CONNECTIONS=20
rm -rf "$DIR"
mkdir -p "$DIR"
export STAYOPEN_BROKER__TLS_DIR="$DIR/pki"

"$BIN/stayopen-cloud" migrate >"$DIR/migrate.log" 2>&1 || { cat "$DIR/migrate.log" >&2; die "migrations failed"; }
"$BIN/stayopen-cloud" seed-demo --out "$DIR/seed.json" >>"$DIR/migrate.log" 2>&1

HTTP_HOST="${HTTP_ADDR%:*}"
HTTP_PORT="${HTTP_ADDR##*:}"
BROKER_HOST="${BROKER_ADDR%:*}"
BROKER_PORT="${BROKER_ADDR##*:}"
# Waits until instance $1's URL path $2 answers.
wait_for() {
    local name="$1" url="$2" pid="$3"
    for _ in $(seq 1 150); do
        curl -fsS "$url" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$DIR/$name.log" >&2; die "$name did not start"; }
        sleep 0.2
    done
    die "$name is not ready ($url); see $DIR/$name.log"
}
# Instance $1 (0-based) of the cloud; with several, on the external broker with its own client id.
start_cloud() {
    local i="$1" name="cloud" http="$HTTP_ADDR"
    local -a env=()
    if [ "$INSTANCES" -gt 1 ]; then
        name="cloud-$i"
        http="$HTTP_HOST:$(( HTTP_PORT + 1 + i ))"
        env=(STAYOPEN_BROKER__EXTERNAL__HOST="$BROKER_HOST" STAYOPEN_BROKER__EXTERNAL__PORT="$BROKER_PORT"
             STAYOPEN_BROKER__EXTERNAL__CLIENT_ID="stayopen-cloud-$i")
    else
        env=(STAYOPEN_BROKER__LISTEN="$BROKER_ADDR")
    fi
    env STAYOPEN_HTTP__LISTEN="$http" "${env[@]}" RUST_LOG="${RUST_LOG:-warn}" \
        "$BIN/stayopen-cloud" serve >"$DIR/$name.log" 2>&1 &
    CLOUD_PIDS+=($!)
    echo "$http" >"$DIR/$name.http"
}

if [ "$INSTANCES" -eq 1 ]; then
    start_cloud 0
    wait_for cloud "http://$HTTP_ADDR/readyz" "${CLOUD_PIDS[0]}"
    BROKER_NAME="embedded broker"
else
    BROKER_NAME="Mosquitto, $INSTANCES instances"
    # The first instance makes the device CA and the broker's certificate in the shared PKI folder;
    # Mosquitto then starts on them, as infra/mosquitto ships it (paths and port for this run,
    # no persistence, no privilege drop).
    start_cloud 0
    wait_for cloud-0 "http://$(cat "$DIR/cloud-0.http")/healthz" "${CLOUD_PIDS[0]}"
    sed -e "s|listener 8883|listener $BROKER_PORT $BROKER_HOST|" \
        -e "s|/var/lib/stayopen-cloud/pki|$DIR/pki|g" \
        -e "s|/etc/mosquitto/stayopen.acl|$ROOT/infra/mosquitto/stayopen.acl|" \
        -e "s|persistence true|persistence false|" -e "/persistence_location/d" \
        infra/mosquitto/stayopen.conf >"$DIR/mosquitto.conf"
    echo "user root" >>"$DIR/mosquitto.conf"
    /usr/sbin/mosquitto -c "$DIR/mosquitto.conf" >"$DIR/mosquitto.log" 2>&1 &
    MOSQUITTO_PID=$!
    HELPER_PIDS+=("$MOSQUITTO_PID")
    for i in $(seq 1 $(( INSTANCES - 1 ))); do start_cloud "$i"; done
    for i in $(seq 0 $(( INSTANCES - 1 ))); do
        wait_for "cloud-$i" "http://$(cat "$DIR/cloud-$i.http")/readyz" "${CLOUD_PIDS[$i]}"
    done
    # HAProxy in front of the instances' APIs, as the scale-out test runs it.
    {
        printf 'global\n    maxconn 4096\n'
        printf 'defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    retries 3\n    option redispatch\n'
        printf 'frontend api\n    bind %s\n    default_backend clouds\n' "$HTTP_ADDR"
        printf 'backend clouds\n    balance roundrobin\n    option httpchk GET /readyz\n'
        for i in $(seq 0 $(( INSTANCES - 1 ))); do
            printf '    server cloud%d %s check inter 500ms fall 2 rise 1\n' "$i" "$(cat "$DIR/cloud-$i.http")"
        done
    } >"$DIR/haproxy.cfg"
    /usr/sbin/haproxy -c -q -f "$DIR/haproxy.cfg" || die "haproxy refuses $DIR/haproxy.cfg"
    /usr/sbin/haproxy -db -f "$DIR/haproxy.cfg" >"$DIR/haproxy.log" 2>&1 &
    HELPER_PIDS+=($!)
    wait_for haproxy "http://$HTTP_ADDR/readyz" "${HELPER_PIDS[1]}"
fi

# Enrolment tokens through the API: one per thousand appliances, shared over the demo's practices.
API="http://$HTTP_ADDR/api/v1"
ACCESS="$(/usr/bin/python3 - "$DIR/seed.json" "$API" <<'PY'
import json, sys, urllib.request
seed = json.load(open(sys.argv[1]))
body = json.dumps({"email": seed["email"], "password": seed["password"]}).encode()
req = urllib.request.Request(sys.argv[2] + "/auth/login", body, {"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req))["access_token"])
PY
)"
/usr/bin/python3 - "$DIR/seed.json" "$API" "$ACCESS" "$APPLIANCES" >"$DIR/tokens.txt" <<'PY'
import json, sys, urllib.request
seed, api, access, n = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], int(sys.argv[4])
practices = [p["id"] for p in seed["practices"]]
for i in range((n + 999) // 1000):
    body = json.dumps({"expires_in_hours": 24, "max_uses": 1000}).encode()
    req = urllib.request.Request(
        "%s/practices/%s/enrollment-tokens" % (api, practices[i % len(practices)]), body,
        {"Content-Type": "application/json", "Authorization": "Bearer " + access})
    print(json.load(urllib.request.urlopen(req))["token"])
PY

cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
rss_kib() { awk -v f="$2" '$1 == f":" { print $2 }' "/proc/$1/status"; }
# The processes measured: the cloud instance(s), and Mosquitto when it is the broker.
MEASURED=("${CLOUD_PIDS[@]}")
MEASURED_NAMES=()
if [ "$INSTANCES" -eq 1 ]; then MEASURED_NAMES=(cloud); else
    for i in $(seq 0 $(( INSTANCES - 1 ))); do MEASURED_NAMES+=("cloud $i"); done
    MEASURED+=("$MOSQUITTO_PID")
    MEASURED_NAMES+=(Mosquitto)
fi
TICKS_BEFORE=()
for pid in "${MEASURED[@]}"; do TICKS_BEFORE+=("$(cpu_ticks "$pid")"); done

log "load generator: $APPLIANCES appliances, telemetry every ${INTERVAL} s, $FAILOVERS failovers/s, ${DURATION} s steady"
# The cloud's resident memory, sampled each second while the generator runs (its peak is VmHWM).
( while kill -0 "${CLOUD_PIDS[0]}" 2>/dev/null; do rss_kib "${CLOUD_PIDS[0]}" VmRSS >>"$DIR/cloud-rss.txt" || true; sleep 1; done ) &
SAMPLER=$!
STARTED=$(date +%s)
RUST_LOG="${LOADGEN_LOG:-info,rumqttc=warn}" "$BIN/stayopen-loadgen" --api-url "http://$HTTP_ADDR" \
    --tokens-file "$DIR/tokens.txt" --appliances "$APPLIANCES" \
    --enrol-concurrency "$ENROL_CONCURRENCY" --connect-concurrency "$CONNECT_CONCURRENCY" \
    --telemetry-interval-secs "$INTERVAL" --failovers-per-sec "$FAILOVERS" \
    --duration-secs "$DURATION" --drain-timeout-secs "$DRAIN" --report "$DIR/report.json" 2>"$DIR/loadgen.log" | tee "$DIR/summary.txt" \
    || { tail -n 30 "$DIR/loadgen.log" >&2; die "the load generator failed"; }
WALL=$(( $(date +%s) - STARTED ))
CLOUD_CPU=""
CLOUD_PEAK_MIB=""
for i in "${!MEASURED[@]}"; do
    pid="${MEASURED[$i]}"
    kill -0 "$pid" 2>/dev/null || die "${MEASURED_NAMES[$i]} died during the run"
    cpu="$(awk -v a="${TICKS_BEFORE[$i]}" -v b="$(cpu_ticks "$pid")" 'BEGIN { printf "%.1f", (b - a) / 100 }')"
    mib="$(awk -v k="$(rss_kib "$pid" VmHWM)" 'BEGIN { printf "%.0f", k / 1024 }')"
    if [ "$INSTANCES" -eq 1 ]; then CLOUD_CPU="$cpu s"; CLOUD_PEAK_MIB="$mib MiB"; else
        CLOUD_CPU="${CLOUD_CPU:+$CLOUD_CPU, }${MEASURED_NAMES[$i]} $cpu s"
        CLOUD_PEAK_MIB="${CLOUD_PEAK_MIB:+$CLOUD_PEAK_MIB, }${MEASURED_NAMES[$i]} $mib MiB"
    fi
done
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true

# What the broker acknowledged, by kind, looked up in PostgreSQL.
/usr/bin/python3 - "$DIR/report.json" >"$DIR/acknowledged.csv" <<'PY'
import json, sys
for m in json.load(open(sys.argv[1]))["messages"]:
    if m["kind"] != "presence" and m["broker_acknowledged"]:
        print("%s,%s" % (m["id"], m["kind"]))
PY
# The steady phase's bounds, for what PostgreSQL stored during it.
read -r STEADY_FROM STEADY_TO <<<"$(/usr/bin/python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["steady_started_at"], r["steady_ended_at"])' "$DIR/report.json")"
loss() {
    "$PSQL" "$OWNER_URL" -qtA -F ' ' <<SQL
CREATE TEMP TABLE acknowledged (id uuid, kind text);
\copy acknowledged FROM '$DIR/acknowledged.csv' WITH (FORMAT csv)
SELECT
  (SELECT count(*) FROM acknowledged),
  (SELECT count(*) FROM acknowledged a WHERE a.kind = 'telemetry'
      AND NOT EXISTS (SELECT 1 FROM telemetry t WHERE t.message_id = a.id))
  + (SELECT count(*) FROM acknowledged a WHERE a.kind = 'event'
      AND NOT EXISTS (SELECT 1 FROM appliance_events e WHERE e.message_id = a.id)),
  (SELECT count(*) FROM (SELECT message_id FROM telemetry GROUP BY message_id HAVING count(*) > 1) d)
  + (SELECT count(*) FROM (SELECT message_id FROM appliance_events GROUP BY message_id HAVING count(*) > 1) d),
  (SELECT count(*) FROM telemetry WHERE received_at BETWEEN '$STEADY_FROM' AND '$STEADY_TO')
  + (SELECT count(*) FROM appliance_events WHERE received_at BETWEEN '$STEADY_FROM' AND '$STEADY_TO');
SQL
}
# A backlog may still be draining into PostgreSQL: wait (at most SETTLE s) until nothing is missing.
SETTLE_DEADLINE=$(( $(date +%s) + SETTLE ))
while :; do
    LOSS="$(loss)"
    read -r ACKED LOST DOUBLED STORED_STEADY <<<"$LOSS"
    if [ "$LOST" = 0 ] || [ "$(date +%s)" -ge "$SETTLE_DEADLINE" ]; then break; fi
    log "$LOST acknowledged messages not in PostgreSQL yet; waiting"
    sleep 5
done
SETTLED_AFTER=$(( $(date +%s) - STARTED - WALL ))


FIGURES="$(/usr/bin/python3 - "$DIR/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
e, c = r["enrolment"], r["connect"]
storm = "%.1f s until all connected" % c["all_connected_secs"] if c["all_connected_secs"] is not None else "NOT all connected within the timeout"
print("%d|%d|%.1f|%.0f|%.0f|%d|%s|%.0f|%.0f|%.1f|%d|%d|%d|%d|%s|%.0f|%.1f|%.1f" % (
    r["appliances"], e["enrolled"], e["per_sec"], e["p50_ms"], e["p99_ms"], c["connected"], storm,
    c["p50_ms"], c["p99_ms"], r["sent_per_sec_steady"],
    r["telemetry"]["sent"] + r["events"]["sent"], r["failovers"], c["lost"], c["failed_attempts"],
    "yes" if r["drained"] else "NO", (r["process"] or {}).get("peak_rss_mib", 0),
    (r["process"] or {}).get("cpu_secs", 0), r["steady_secs"]))
PY
)"
IFS='|' read -r N ENROLLED ENROL_RATE ENROL_P50 ENROL_P99 CONNECTED STORM CONN_P50 CONN_P99 SENT_RATE \
    RECORDS FAILOVER_COUNT LOST_SESSIONS FAILED_ATTEMPTS DRAINED GEN_MIB GEN_CPU STEADY_SECS <<<"$FIGURES"
STORED_RATE="$(awk -v n="$STORED_STEADY" -v s="$STEADY_SECS" 'BEGIN { printf "%.1f", (s > 0 ? n / s : 0) }')"

cat <<TABLE

| figure | value |
|---|---|
| appliances | $N ($ENROLLED enrolled, $CONNECTED connected) |
| enrolment storm | $ENROL_RATE enrolments/s (p50 $ENROL_P50 ms, p99 $ENROL_P99 ms) |
| connect storm (TLS, $BROKER_NAME) | $STORM (per session p50 $CONN_P50 ms, p99 $CONN_P99 ms; $FAILED_ATTEMPTS failed attempts, $LOST_SESSIONS sessions lost) |
| resident memory (peak) | $CLOUD_PEAK_MIB |
| CPU | $CLOUD_CPU over ${WALL} s (enrolment, connect storm, steady phase, drain) |
| stored during the steady phase | $STORED_RATE messages/s into PostgreSQL, of $SENT_RATE/s sent (${STEADY_SECS} s, telemetry every ${INTERVAL} s, $FAILOVER_COUNT failovers) |
| loss | $LOST lost, $DOUBLED duplicated of $ACKED acknowledged by the broker ($RECORDS records sent; the cloud acknowledged all as stored within the drain: $DRAINED; PostgreSQL complete ${SETTLED_AFTER} s after the generator ended) |
| load generator | $GEN_MIB MiB peak, $GEN_CPU s CPU |

Report: ${DIR#"$ROOT"/}/report.json; logs: ${DIR#"$ROOT"/}/cloud*.log, ${DIR#"$ROOT"/}/loadgen.log
TABLE
if [ "$LOST" != 0 ] || [ "$DOUBLED" != 0 ]; then die "$LOST messages lost, $DOUBLED duplicated"; fi
if [ "$CONNECTED" != "$N" ] || [ "$ENROLLED" != "$N" ]; then die "only $ENROLLED enrolled and $CONNECTED connected of $N"; fi
