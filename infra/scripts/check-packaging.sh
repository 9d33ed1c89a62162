#!/usr/bin/env bash
# The packaging checks (root): what can be checked here without a running systemd or a cluster.
#
# 1. The appliance's .deb (dev-profile binary, infra/scripts/build-deb.sh --dev; the release package
#    with STAYOPEN_PKGCHECK_RELEASE=1) is installed with
#    dpkg, maintainer scripts and all, into a throwaway copy of this system: an overlay over / in a
#    private mount namespace, so the host is never touched. Its postinst must create the `stayopen`
#    user (systemd-sysusers).
# 2. `systemd-analyze verify` on every unit in infra/systemd and infra/mosquitto (in that copy, where the installed
#    agent and the dev builds of the cloud and relay sit at the paths the units name), and
#    `systemd-analyze security` exposure scores, which must stay below 3.0 ("OK").
# 3. The installed agent is STARTED as its installed unit says — ExecStartPre's privileged step,
#    then ExecStart's command line run as the unit's User= with exactly its AmbientCapabilities=
#    and CapabilityBoundingSet= and no new privileges (setpriv), with a notification socket and a
#    watchdog as systemd would give it — in network namespaces where the installed example
#    configuration (less its [cloud] section) is real: lan0, wan0 (fibre, gateway 192.0.2.1),
#    wan1 (cable, 198.51.100.1), probe targets 203.0.113.10 and .11. It must tell systemd READY=1,
#    ping the watchdog, answer `stayopen-appliance status` with fibre active, have installed its
#    nftables table through its `nft` child, and on SIGTERM say STOPPING=1 and exit 0 within the
#    unit's TimeoutStopSec.
# 4. The install at a practice (issue 17), in the testbed with a router (infra/testbed/testbed.sh
#    up router, modems by DHCP, each ISP's resolver only through its ISP): in the same copy, a fresh
#    box (ports down, no configuration, its cloud unreachable) gets `setup --yes`, the agent starts
#    as its unit says, the router starts its DHCP client and nothing else is configured; the host
#    behind the router must reach 203.0.113.30 and resolve names, then again with ISP1 blackholed.
#    It prints the time from `setup` to the host's first answer. Then the package is purged, and
#    its configuration and state with it.
# 5. infra/compose/compose.yaml against the Compose specification's schema, infra/k8s/*.yaml
#    against the Kubernetes schemas, and infra/container/Containerfile through BuildKit's parser
#    (check-jsonschema, kubernetes-validate and dockerfile from PyPI, in a cached virtualenv).
#
# Not emulated: the seccomp filter, ProtectSystem= and the other mount-namespace settings, which
# only systemd applies; the images are not built and nothing runs in a container or cluster (no
# container engine here).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

P="${STAYOPEN_PKGCHECK_PREFIX:-sopkg}"
# The practice's testbed (infra/testbed/testbed.sh with a router).
T="${P}tb"
UNIT=usr/lib/systemd/system/stayopen-appliance.service

# ---- inside the private mount namespace -------------------------------------------------------
# $1 = the .deb, $2 = the work folder (tmpfs), $3 = the folder holding the cloud and relay binaries
inside() {
    local deb="$1" work="$2" bins="$3"
    local root="$work/root"
    mkdir -p "$work/upper" "$work/overlay-work" "$root"
    mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/overlay-work" "$root"
    mount --rbind /dev "$root/dev"
    mount -t proc proc "$root/proc"
    mount -t tmpfs tmpfs "$root/run"
    mount -t tmpfs tmpfs "$root/tmp"

    log "dpkg -i $(basename "$deb") into a copy of this system"
    cp "$deb" "$root/tmp/stayopen-appliance.deb"
    chroot "$root" env DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/stayopen-appliance.deb >&2
    chroot "$root" id stayopen >/dev/null || die "the package's postinst made no stayopen user"
    chroot "$root" test -f /etc/stayopen/appliance.example.toml || die "no example configuration"
    grep -qx /etc/stayopen/appliance.example.toml "$root/var/lib/dpkg/info/stayopen-appliance.conffiles" \
        || die "the example configuration is not a conffile"

    log "systemd-analyze verify and security on every unit"
    install -m 755 "$bins/stayopen-cloud" "$bins/stayopen-relay" "$root/usr/local/bin/"
    local unit score out
    local -a units=("/$UNIT")
    for unit in infra/systemd/*.service infra/mosquitto/*.service infra/mosquitto/*.path; do
        [ "$(basename "$unit")" != stayopen-appliance.service ] || continue
        cp "$unit" "$root/etc/systemd/system/"
        units+=("/etc/systemd/system/$(basename "$unit")")
    done
    for unit in "${units[@]}"; do
        # Warnings (an unknown key, a key in the wrong section) fail the check too.
        out="$(chroot "$root" systemd-analyze verify "$unit" 2>&1)" || die "systemd-analyze verify $unit: $out"
        [ -z "$out" ] || die "systemd-analyze verify $unit: $out"
    done
    cmp -s "$root/$UNIT" infra/systemd/stayopen-appliance.service || die "the package's unit is not infra/systemd's"
    for unit in stayopen-appliance stayopen-cloud stayopen-relay; do
        score="$(systemd-analyze security --offline=yes "infra/systemd/$unit.service" 2>/dev/null \
            | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
        log "systemd-analyze security $unit.service: exposure $score"
        awk -v s="$score" 'BEGIN { exit !(s != "" && s < 3.0) }' || die "$unit.service exposure ${score:-unknown} is not below 3.0"
    done

    start_installed_agent "$root"
    install_at_a_practice "$root" "$work"

    log "dpkg --purge: the agent's state goes with the package"
    chroot "$root" env DEBIAN_FRONTEND=noninteractive dpkg --purge stayopen-appliance >&2
    [ ! -e "$root/var/lib/stayopen" ] || die "purging left /var/lib/stayopen"
    [ ! -e "$root/etc/stayopen/appliance.toml" ] || die "purging left the configuration setup wrote"
    [ ! -e "$root/$UNIT" ] || die "purging left the unit"
}

# 4. The install the product promises, in the testbed with a practice's router (namespaces $T-*,
#    made outside): the modems hand out the uplinks' addresses by DHCP, each ISP's resolver answers
#    only through its own ISP, and the router's WAN port waits for a lease. The box is fresh: its
#    ports down, no configuration, no state, and its cloud unreachable (enrolment must not hold up
#    the practice's traffic). `setup --yes` finds the modems and the router and writes the
#    configuration; the installed agent starts as its unit says; the router starts its DHCP
#    client, and nothing else is configured by hand. The host behind the router must reach the
#    EHR (203.0.113.30) and resolve names; then, with ISP1 blackholed, again, and a name no cache
#    holds must resolve through ISP2's resolver.
install_at_a_practice() {
    local root="$1" unit="$1/$UNIT" out="$2/practice" user
    user="$(unit_value "$unit" User)"
    mkdir -p "$out"
    rm -rf "$root/var/lib/stayopen" "$root/etc/stayopen/appliance.toml"
    chroot "$root" install -d -o "$user" -g "$user" -m "$(unit_value "$unit" StateDirectoryMode)" /var/lib/stayopen
    printf 'soe_install_check_not_a_real_token\n' > "$root/root/enrolment-token"
    chmod 0600 "$root/root/enrolment-token"
    local port
    for port in lan0 wan0 wan1; do ip -n "$T-app" link set "$port" down; done

    log "a fresh box between the modems and the router (ports down): setup --yes"
    local t_setup
    t_setup="$(date +%s.%N)"
    ip netns exec "$T-app" sh -c 'mount -t sysfs sysfs "$1/sys" && shift && exec "$@"' sh "$root" \
        chroot "$root" /usr/bin/stayopen-appliance setup --yes \
        --probe-target 203.0.113.10 --probe-target 203.0.113.11 \
        --cloud http://203.0.113.40 --allow-plain-http --token-file /root/enrolment-token \
        >"$out/setup.log" 2>&1 || { cat "$out/setup.log" >&2; die "setup failed"; }
    sed 's/^/  setup: /' "$out/setup.log" >&2
    local config="$root/etc/stayopen/appliance.toml"
    grep -q '^interface = "lan0"' "$config" && grep -q '^interface = "wan0"' "$config" \
        && grep -q '^interface = "wan1"' "$config" \
        || { cat "$config" >&2; die "setup did not take lan0 for the router and wan0, wan1 for the modems"; }
    [ "$(grep -c '^addressing = "dhcp"' "$config")" -eq 2 ] || { cat "$config" >&2; die "setup did not make both uplinks DHCP"; }
    if grep -q soe_install_check_not_a_real_token "$out/setup.log"; then die "setup printed the enrolment token"; fi

    launch_installed_agent "$root" "$T-app"
    log "READY=1 after $READY_AFTER (the cloud unreachable: enrolment goes on beside the traffic)"
    bash "$ROOT/infra/testbed/testbed.sh" "$T" router-dhcp "$out/router"

    host_fetches() { ip netns exec "$T-host" curl -sf --max-time 2 -o /dev/null http://203.0.113.30/; }
    # resolves NAME: the host asks its router (100.64.20.1), which forwards to what its lease named.
    host_resolves() {
        timeout 3 ip netns exec "$T-host" busybox nslookup "$1" 100.64.20.1 2>/dev/null | grep -q '203\.0\.113\.30'
    }
    wait_for "the host behind the router reaching the EHR" 60 host_fetches \
        || { cat "$out/router/rtr-lease.log" "$WORK_LOG" >&2; die "the host behind the router never reached 203.0.113.30"; }
    local t_traffic
    t_traffic="$(date +%s.%N)"
    log "setup to traffic: $(awk -v a="$t_setup" -v b="$t_traffic" 'BEGIN { printf "%.2f s", b - a }') (setup $(sed -n 's/^setup took //p' "$out/setup.log"), the agent's start, the router's lease)"
    grep -q '^bound ' "$out/router/rtr-lease.log" || die "the router got no lease"
    wait_for "a name resolved for the host" 10 host_resolves "before.test.example" \
        || { cat "$out/router/rtr-dnsmasq.log" >&2; die "the host behind the router cannot resolve names"; }
    local status
    status="$(chroot "$root" /usr/bin/stayopen-appliance status --config /etc/stayopen/appliance.toml)"
    sed 's/^/  status: /' <<<"$status" >&2
    grep -q '^active uplink: wan1$' <<<"$status" || die "the first modem's uplink is not active"
    grep -q '^cloud: enrolling$' <<<"$status" || die "status does not say the agent is still enrolling"
    grep -q '^wan1 lease: 100\.64\.1\.[0-9]*/24, gateway 100\.64\.1\.1, DNS 192\.0\.2\.53 ' <<<"$status" \
        || die "status does not show the first modem's lease"
    grep -q '^LAN lan0 [0-9./]*: DHCP server ([0-9.]* to [0-9a-f:]*;' <<<"$status" \
        || die "status does not show the router's lease on the LAN"

    log "ISP1 blackholed"
    bash "$ROOT/infra/testbed/testbed.sh" "$T" fault blackhole 1
    local t_fault t_switched t_resolved
    t_fault="$(date +%s.%N)"
    wait_for "the agent on wan2" 10 sh -c \
        "chroot '$root' /usr/bin/stayopen-appliance status --config /etc/stayopen/appliance.toml | grep -q '^active uplink: wan2$'" \
        || die "the agent did not fail over to wan2"
    t_switched="$(date +%s.%N)"
    wait_for "a new name resolved through ISP2" 10 host_resolves "after-failover.test.example" \
        || { cat "$out/router/rtr-dnsmasq.log" >&2; die "names stopped resolving after the failover"; }
    t_resolved="$(date +%s.%N)"
    wait_for "the host reaching the EHR after the failover" 10 host_fetches || die "the host lost the EHR after the failover"
    log "failover: on wan2 $(awk -v a="$t_fault" -v b="$t_switched" 'BEGIN { printf "%.2f s", b - a }') after the blackhole; a new name resolved $(awk -v a="$t_switched" -v b="$t_resolved" 'BEGIN { printf "%.2f s", b - a }') after that"

    kill -TERM "$AGENT"
    wait "$AGENT" || die "the agent did not exit cleanly after the practice install"
    log "the practice install: the host behind the router reached the EHR and resolved names, before and after a failover"
}

# The unit's value of KEY (the last one wins, as in systemd), from the installed unit.
unit_value() { sed -n "s/^$2=//p" "$1" | tail -n 1; }

# "CAP_NET_ADMIN CAP_NET_RAW" → "-all,+net_admin,+net_raw" (setpriv's syntax).
setpriv_caps() {
    local caps="-all" cap
    for cap in $1; do caps+=",+$(tr '[:upper:]' '[:lower:]' <<<"${cap#CAP_}")"; done
    echo "$caps"
}

# launch_installed_agent ROOT NETNS: starts ExecStart as the unit says (User=, its capabilities, no
# new privileges, the notification socket and a 2 s watchdog) in NETNS, after the unit's
# ExecStartPre steps; waits for READY=1 (fails if the agent exits first). Sets AGENT and READY_AFTER.
launch_installed_agent() {
    local root="$1" netns="$2" unit="$1/$UNIT"
    local user exec_start ambient bounding pre
    user="$(unit_value "$unit" User)"
    exec_start="$(unit_value "$unit" ExecStart)"
    ambient="$(unit_value "$unit" AmbientCapabilities)"
    bounding="$(unit_value "$unit" CapabilityBoundingSet)"
    # ExecStartPre lines; a leading + runs with full privileges, as root.
    while IFS= read -r pre; do
        [[ "$pre" == +* ]] || die "unexpected unprivileged ExecStartPre: $pre"
        log "ExecStartPre: ${pre#+}"
        # shellcheck disable=SC2086 # the unit's command line, split as systemd splits it (no quotes but the sh -c one)
        eval "chroot \"$root\" ${pre#+}"
    done < <(sed -n 's/^ExecStartPre=//p' "$unit")
    : > "$root/run/notify.log"
    local env_line path_env
    env_line="$(unit_value "$unit" Environment)"
    # systemd's default PATH for services: the agent finds ip, nft and conntrack in /usr/sbin.
    path_env="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
    log "ExecStart in $netns as $user with $ambient: $exec_start"
    local started_at
    started_at="$(date +%s.%N)"
    # shellcheck disable=SC2086 # ExecStart's words, as systemd splits them
    ip netns exec "$netns" sh -c 'mount -t sysfs sysfs "$1/sys" && shift && exec "$@"' sh "$root" \
        chroot "$root" env -i "$path_env" "$env_line" NOTIFY_SOCKET=/run/notify.sock WATCHDOG_USEC=2000000 \
        setpriv --reuid="$user" --regid="$user" --init-groups \
        --inh-caps="$(setpriv_caps "$ambient")" --ambient-caps="$(setpriv_caps "$ambient")" \
        --bounding-set="$(setpriv_caps "$bounding")" --no-new-privs \
        $exec_start >>"$WORK_LOG" 2>&1 &
    AGENT=$!
    # An agent that exits fails at once rather than after the whole wait.
    wait_for "READY=1 from the agent" 20 ready_or_gone "$root/run/notify.log" || true
    grep -qx READY=1 "$root/run/notify.log" || { cat "$WORK_LOG" >&2; die "the installed agent did not become ready"; }
    READY_AFTER="$(awk -v a="$started_at" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f s", b - a }')"
}

start_installed_agent() {
    local root="$1" unit="$1/$UNIT"
    local user exec_start ambient timeout_stop
    user="$(unit_value "$unit" User)"
    exec_start="$(unit_value "$unit" ExecStart)"
    ambient="$(unit_value "$unit" AmbientCapabilities)"
    timeout_stop="$(unit_value "$unit" TimeoutStopSec)"
    [ "$(unit_value "$unit" NoNewPrivileges)" = yes ] || die "the unit lost NoNewPrivileges"
    if [ -z "$user" ] || [ -z "$exec_start" ] || [ -z "$ambient" ]; then
        die "the installed unit lacks User=, ExecStart= or AmbientCapabilities="
    fi

    # The configuration: the installed example less its [cloud] section (no cloud here).
    awk '/^\[/ { skip = ($0 == "[cloud]") } !skip' "$root/etc/stayopen/appliance.example.toml" \
        > "$root/etc/stayopen/appliance.toml"
    chmod 0600 "$root/etc/stayopen/appliance.toml"   # as root's `setup` writes it
    # What systemd does for StateDirectory= and ConfigurationDirectory= before the first start.
    chroot "$root" install -d -o "$user" -g "$user" -m "$(unit_value "$unit" StateDirectoryMode)" /var/lib/stayopen
    chmod "$(unit_value "$unit" ConfigurationDirectoryMode)" "$root/etc/stayopen"

    # systemd's side of sd_notify(3): a datagram socket the agent's user may write to.
    cat >"$root/tmp/notify-listener.py" <<'PY'
import os, socket, sys
path, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
with open(log, "a", buffering=1) as out:
    while True:
        out.write(s.recv(4096).decode() + "\n")
PY
    chroot "$root" /usr/bin/python3 /tmp/notify-listener.py /run/notify.sock /run/notify.log &
    LISTENER=$!
    # Whatever happens, nothing started here outlives the check.
    trap 'kill $LISTENER $AGENT 2>/dev/null || true' EXIT
    wait_for "the notification socket" 5 test -S "$root/run/notify.sock"

    launch_installed_agent "$root" "$P-app"
    log "READY=1 after $READY_AFTER"

    local pid status
    pid="$(pgrep -f -n "^/usr/bin/stayopen-appliance run" || true)"
    [ -n "$pid" ] || die "no stayopen-appliance process"
    status="$(cat "/proc/$pid/status")"
    grep -q "^Uid:[[:space:]]*$(chroot "$root" id -u "$user")[[:space:]]" <<<"$status" || die "the agent does not run as $user"
    # CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12), CAP_NET_RAW (13): 0x3400, nothing else.
    grep -q '^CapEff:[[:space:]]*0000000000003400$' <<<"$status" || die "the agent's capabilities: $(grep ^Cap <<<"$status")"
    grep -q '^NoNewPrivs:[[:space:]]*1$' <<<"$status" || die "the agent may gain privileges"

    wait_for "fibre active in the agent's status" 15 sh -c \
        "chroot '$root' /usr/bin/stayopen-appliance status --config /etc/stayopen/appliance.toml --json | grep -q '\"active\": \"fiber\"'" \
        || { chroot "$root" /usr/bin/stayopen-appliance status --config /etc/stayopen/appliance.toml >&2 || true; cat "$WORK_LOG" >&2; die "status does not show fibre active"; }
    ip netns exec "$P-app" nft list table ip stayopen >/dev/null \
        || die "the agent's nft child, running with the ambient capabilities, made no table"
    wait_for "two watchdog pings (2 s timeout: one a second)" 5 sh -c "[ \$(grep -cx WATCHDOG=1 '$root/run/notify.log') -ge 2 ]" \
        || die "the agent does not ping the watchdog"

    log "SIGTERM; the unit allows $timeout_stop"
    kill -TERM "$pid"
    local code=0
    timeout "${timeout_stop%s}" tail --pid="$pid" -f /dev/null || die "the agent did not stop within $timeout_stop"
    wait "$AGENT" || code=$?
    [ "$code" -eq 0 ] || { cat "$WORK_LOG" >&2; die "the agent exited $code on SIGTERM"; }
    grep -qx STOPPING=1 "$root/run/notify.log" || die "the agent did not say STOPPING=1"
    [ ! -e "$root/var/lib/stayopen/control.sock" ] || die "the control socket was left behind"
    if grep -E '(WARN|ERROR)' "$WORK_LOG" >&2; then die "the installed agent logged the warnings or errors above"; fi
    log "the installed agent started as $user with CapEff 0x3400, answered status with fibre active, pinged the watchdog, stopped cleanly"
}

# Whether the agent said READY=1 in the log $1, or has exited.
ready_or_gone() { grep -qx READY=1 "$1" || ! kill -0 "$AGENT" 2>/dev/null; }

# wait_for WHAT SECONDS COMMAND…: polls every 100 ms.
wait_for() {
    local what="$1" secs="$2" i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "timed out waiting for $what"
    return 1
}

LISTENER=""
AGENT=""
if [ "${1:-}" = --inside ]; then
    WORK_LOG="$3/agent.log"
    inside "$2" "$3" "$4"
    exit 0
fi

# ---- outside: build, namespaces, validators ---------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "check-packaging.sh needs root (dpkg into an overlay, network namespaces)"
ensure_deps netns
command -v systemd-analyze >/dev/null || die "systemd-analyze is missing"

# CI installs the dev build the tests already made; STAYOPEN_PKGCHECK_RELEASE=1 installs the release
# package (what goes on an appliance), for the install's figures.
if [ "${STAYOPEN_PKGCHECK_RELEASE:-0}" = 1 ]; then
    deb="$(bash "$ROOT/infra/scripts/build-deb.sh")"
else
    deb="$(bash "$ROOT/infra/scripts/build-deb.sh" --dev)"
fi
log "building stayopen-cloud and stayopen-relay (dev) for their units' verification"
cargo build -q -p stayopen-cloud --bin stayopen-cloud -p stayopen-tunnel --bin stayopen-relay

work="$(mktemp -d "${TMPDIR:-/tmp}/stayopen-pkgcheck.XXXXXX")"
cleanup() {
    local n
    for n in app net; do ip netns del "$P-$n" 2>/dev/null || true; done
    bash "$ROOT/infra/testbed/testbed.sh" "$T" down 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cleanup_stale() { local n; for n in app net; do ip netns del "$P-$n" 2>/dev/null || true; done; }
cleanup_stale

# The example configuration's world: the router's side of lan0, fibre's gateway 192.0.2.1, cable's
# 198.51.100.1, and the probe targets behind both, all in one "net" namespace.
ip netns add "$P-app"
ip netns add "$P-net"
ip -n "$P-app" link set lo up
ip -n "$P-net" link set lo up
ip -n "$P-app" link add lan0 type veth peer name router netns "$P-net"
ip -n "$P-app" link add wan0 type veth peer name isp1 netns "$P-net"
ip -n "$P-app" link add wan1 type veth peer name isp2 netns "$P-net"
ip -n "$P-app" addr add 100.64.10.1/24 dev lan0
ip -n "$P-app" addr add 192.0.2.2/24 dev wan0
ip -n "$P-app" addr add 198.51.100.2/24 dev wan1
ip -n "$P-net" addr add 100.64.10.2/24 dev router
ip -n "$P-net" addr add 192.0.2.1/24 dev isp1
ip -n "$P-net" addr add 198.51.100.1/24 dev isp2
ip -n "$P-net" addr add 203.0.113.10/32 dev lo
ip -n "$P-net" addr add 203.0.113.11/32 dev lo
for dev in lan0 wan0 wan1; do ip -n "$P-app" link set "$dev" up; done
for dev in router isp1 isp2; do ip -n "$P-net" link set "$dev" up; done

# The practice: modems with DHCP (TESTBED_WAN_DHCP), a router, the ISPs' resolvers, the EHR on :80.
TESTBED_WAN_DHCP=1 bash "$ROOT/infra/testbed/testbed.sh" "$T" up router
bash "$ROOT/infra/testbed/testbed.sh" "$T" resolvers "$work/resolvers"
mkdir -p "$work/www"
echo "EHR" > "$work/www/index.html"
ip netns exec "$T-net" /usr/bin/python3 -m http.server --bind 203.0.113.30 --directory "$work/www" 80 \
    </dev/null >/dev/null 2>&1 &

bins="$work/bins"
mkdir -p "$bins"
cp "$CARGO_TARGET_DIR/debug/stayopen-cloud" "$CARGO_TARGET_DIR/debug/stayopen-relay" "$bins/"
mkdir -p "$work/ns"
unshare --mount --propagation private bash -c \
    'mount -t tmpfs tmpfs "$2" && exec bash "$1" --inside "$3" "$2" "$4"' \
    sh "$ROOT/infra/scripts/check-packaging.sh" "$work/ns" "$deb" "$bins"

# ---- deployment files against their schemas ---------------------------------------------------
venv="$HOME/.cache/stayopen/validate-venv"
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/check-jsonschema" ] \
    || ! "$venv/bin/python" -c 'import dockerfile' 2>/dev/null; then
    log "installing kubernetes-validate, check-jsonschema and dockerfile (once, in $venv)"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q kubernetes-validate==1.37.0 check-jsonschema==0.39.0 dockerfile==3.4.0
fi
log "compose.yaml against the Compose specification"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec infra/compose/compose.yaml >&2
log "infra/k8s against the Kubernetes 1.32 schemas (strict: unknown fields are errors)"
k8s_files=()
for file in infra/k8s/*.yaml; do
    [ "$(basename "$file")" = kustomization.yaml ] || k8s_files+=("$file")
done
"$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.32.0 "${k8s_files[@]}" >&2
# kustomization.yaml must name every manifest, or `kubectl apply -k` would leave one out.
for file in "${k8s_files[@]}"; do
    grep -qx "  - $(basename "$file")" infra/k8s/kustomization.yaml || die "infra/k8s/kustomization.yaml omits $(basename "$file")"
done
log "Containerfile: parsed with BuildKit's parser (the dockerfile package), its stages and commands checked"
"$venv/bin/python" - infra/container/Containerfile infra/compose/compose.yaml <<'PY'
import subprocess, sys
import dockerfile, yaml

commands = dockerfile.parse_file(sys.argv[1])
stages, current, users = [], None, {}
for c in commands:
    if c.cmd == "FROM":
        assert len(c.value) == 3 and c.value[1].upper() == "AS", f"line {c.start_line}: every stage is named"
        current = c.value[2]
        stages.append(current)
    elif c.cmd == "COPY":
        for flag in c.flags:
            if flag.startswith("--from="):
                assert flag[7:] in stages[:-1], f"line {c.start_line}: COPY {flag} names no earlier stage"
    elif c.cmd == "RUN":
        # Every RUN is valid sh (BuildKit runs /bin/sh -c).
        subprocess.run(["sh", "-n", "-c", c.value[0]], check=True)
    elif c.cmd == "USER":
        users[current] = c.value[0]
assert stages[-1] == "cloud", "the default (last) target is the cloud"
assert users.get("cloud", "root").split(":")[0] not in ("root", "0"), "the cloud image runs as a non-root user"
compose = yaml.safe_load(open(sys.argv[2]))
for name, service in compose["services"].items():
    build = service.get("build")
    if build:
        assert build["target"] in stages, f"compose service {name}: target {build['target']} is no stage"
print(f"stages {stages}, cloud as user {users['cloud']}")
PY
log "not checked here (no container engine or cluster): building infra/container/Containerfile, running the compose file and the manifests"
log "packaging checks passed"
