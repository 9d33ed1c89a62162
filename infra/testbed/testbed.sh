#!/usr/bin/env bash
# A failover testbed of network namespaces joined by veth pairs, never connected to the root
# namespace. Addresses come from the documentation ranges and 100.64.0.0/10.
#
#   LAN host ──lan0── appliance ──wan0── ISP1 router (NAT) ──┐
#   100.64.10.2       100.64.10.1 100.64.1.2   100.64.1.1     │ 192.0.2.0/24
#                                 ──wan1── ISP2 router (NAT) ──┤ 198.51.100.0/24
#                                   100.64.2.2   100.64.2.1    │
#                                                          "internet" (routes between its links)
#                            probe targets 203.0.113.10-.13, UDP echo 203.0.113.20:7,
#                            HTTP "EHR" 203.0.113.30:80
#                                 │ 203.0.113.48/30                │ 203.0.113.56/29
#                          relay (stayopen-relay)           srv (a server on the internet)
#                          eth0 203.0.113.50: its stable     eth0 203.0.113.60, and .61 for
#                          public address, WireGuard :51820  flows the tunnel leaves direct
#
# The relay's tunnelled flows leave it NATed to 203.0.113.50, so the server behind it sees that one
# address whichever ISP carries the tunnel; direct flows reach it as 192.0.2.1 or 198.51.100.1.
#
# Usage: testbed.sh PREFIX up [router] | down | exec NODE CMD… | ehr-https DIR | resolvers DIR |
#        router-dhcp DIR |
#        fault blackhole ISP | loss PCT ISP | dead-target ADDR | carrier-down ISP | carrier-up ISP | clear
#
# `up router` puts a practice's router between the appliance and the LAN host (issue 17):
#
#   host ──eth0── router (rtr) ──wan0─────── lan0── appliance …
#   100.64.20.2   lan1 100.64.20.1    DHCP from the appliance (its LAN address is the agent's
#                 NAT out of wan0,    `lan.address`; the agent puts it on lan0)
#                 DNS for its LAN on 100.64.20.1 (dnsmasq, with the servers its lease names)
#
# The router's factory setup is its own LAN address and NAT; nothing else is configured on it:
# `router-dhcp DIR` starts its DHCP client (busybox udhcpc) and its DNS forwarder, and its lease
# does the rest (DIR/rtr-lease.log records each lease, DIR/rtr-resolv.conf its DNS servers).
# The `lan` namespace stays, unconnected.
#
# `resolvers DIR` starts the ISPs' DNS resolvers in the internet namespace (dnsmasq): ISP1's at
# 192.0.2.53 answers only queries from ISP1's NAT address 192.0.2.1, ISP2's at 198.51.100.53 only
# from 198.51.100.1, so each is reachable only through its own ISP. Both answer ehr.example and
# every name under test.example with 203.0.113.30 (tests ask fresh names to miss every cache).
#
# `ehr-https DIR` writes a test CA (DIR/ca.pem) and a certificate for 203.0.113.30 / ehr.example,
# and serves HTTPS on 203.0.113.30:443 from the internet namespace: the stand-in for a cloud EHR.
# NODE is one of lan, app, isp1, isp2, net, relay, srv (and rtr, host with `up router`);
# namespaces are named PREFIX-NODE.
#
# With TESTBED_WAN_DHCP=1, `up` (or `wan-dhcp` on a running testbed) takes wan0/wan1's static
# addresses away and the ISP routers hand them out by DHCP (dnsmasq on down0), as cable and fibre
# modems do: ISP1 100.64.1.100-.199, router 100.64.1.1, DNS 192.0.2.53; ISP2 100.64.2.100-.199,
# router 100.64.2.1, DNS 198.51.100.53. `dhcp-server ISP FIRST LAST LEASE_SECS [T1 T2]` restarts
# one ISP's server with another pool, lease time (dnsmasq's minimum is 120 s) and renewal times.
# The netns tests and the failover benchmark (`stayopen-testbed bench`) drive it through the testkit
# crate's testbed module (testkit/src/testbed.rs).
set -euo pipefail

P="${1:?prefix}"
ACTION="${2:?action}"
shift 2
NODES="lan app isp1 isp2 net relay srv"
ns() { echo "$P-$1"; }
x() { ip netns exec "$(ns "$1")" "${@:2}"; }

up() {
    for n in $NODES; do ip netns add "$(ns $n)"; x "$n" ip link set lo up; done
    # Links are created inside the namespaces: nothing ever touches the root namespace.
    ip -n "$(ns lan)" link add eth0 type veth peer name lan0 netns "$(ns app)"
    ip -n "$(ns app)" link add wan0 type veth peer name down0 netns "$(ns isp1)"
    ip -n "$(ns app)" link add wan1 type veth peer name down0 netns "$(ns isp2)"
    ip -n "$(ns isp1)" link add up0 type veth peer name isp1 netns "$(ns net)"
    ip -n "$(ns isp2)" link add up0 type veth peer name isp2 netns "$(ns net)"
    ip -n "$(ns relay)" link add eth0 type veth peer name relay netns "$(ns net)"
    ip -n "$(ns srv)" link add eth0 type veth peer name srv netns "$(ns net)"

    x lan ip addr add 100.64.10.2/24 dev eth0
    x app ip addr add 100.64.10.1/24 dev lan0
    x app ip addr add 100.64.1.2/24 dev wan0
    x app ip addr add 100.64.2.2/24 dev wan1
    x isp1 ip addr add 100.64.1.1/24 dev down0
    x isp2 ip addr add 100.64.2.1/24 dev down0
    x isp1 ip addr add 192.0.2.1/24 dev up0
    x isp2 ip addr add 198.51.100.1/24 dev up0
    x net ip addr add 192.0.2.254/24 dev isp1
    x net ip addr add 198.51.100.254/24 dev isp2
    for a in 10 11 12 13 20 30; do x net ip addr add "203.0.113.$a/32" dev lo; done
    x net ip addr add 203.0.113.49/30 dev relay
    x net ip addr add 203.0.113.57/29 dev srv
    x relay ip addr add 203.0.113.50/30 dev eth0
    x srv ip addr add 203.0.113.60/29 dev eth0
    x srv ip addr add 203.0.113.61/29 dev eth0
    for pair in "lan eth0" "app lan0" "app wan0" "app wan1" "isp1 down0" "isp2 down0" "isp1 up0" "isp2 up0" "net isp1" "net isp2" "net relay" "net srv" "relay eth0" "srv eth0"; do
        set -- $pair
        x "$1" ip link set "$2" up
    done
    x lan ip route add default via 100.64.10.1
    # The internet routes between the ISPs, the relay and the server.
    x net sysctl -qw net.ipv4.ip_forward=1
    x relay ip route add default via 203.0.113.49
    x srv ip route add default via 203.0.113.57
    for isp in 1 2; do
        x "isp$isp" sysctl -qw net.ipv4.ip_forward=1
        local upstream; upstream=$([ "$isp" = 1 ] && echo 192.0.2.254 || echo 198.51.100.254)
        x "isp$isp" ip route add default via "$upstream"
        # Each ISP router does its own NAT, like a cable modem or an LTE router.
        x "isp$isp" nft -f - <<NFT
table ip isp {
    chain nat { type nat hook postrouting priority srcnat; oifname "up0" masquerade; }
}
table inet fault {
    chain forward { type filter hook forward priority 0; policy accept; }
}
NFT
    done
    x net nft -f - <<'NFT'
table inet fault {
    chain input { type filter hook input priority 0; policy accept; }
}
NFT
}

# dhcp_server ISP FIRST LAST LEASE_SECS [T1_SECS T2_SECS]: (re)starts ISP's DHCP server on down0
# with a fresh lease database (a restarted server that has forgotten its clients). Authoritative:
# it refuses (NAK) a renewal of an address outside its pool instead of staying silent. No ping
# before an offer (dnsmasq's default waits for an echo that never comes).
dhcp_server() {
    local isp="${1:?isp}" first="${2:?first}" last="${3:?last}" lease="${4:?lease secs}" t1="${5:-}" t2="${6:-}"
    local router dns dir="/tmp/stayopen-testbed-$P-dhcp"
    router=$([ "$isp" = 1 ] && echo 100.64.1.1 || echo 100.64.2.1)
    dns=$([ "$isp" = 1 ] && echo 192.0.2.53 || echo 198.51.100.53)
    mkdir -p "$dir"
    if [ -s "$dir/isp$isp.pid" ]; then
        kill "$(cat "$dir/isp$isp.pid")" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$(cat "$dir/isp$isp.pid")" 2>/dev/null || break; sleep 0.05; done
    fi
    : > "$dir/isp$isp.leases"
    local timers=()
    [ -n "$t1" ] && timers+=(--dhcp-option="option:T1,$t1")
    [ -n "$t2" ] && timers+=(--dhcp-option="option:T2,$t2")
    x "isp$isp" dnsmasq --conf-file=/dev/null --port=0 --interface=down0 --bind-interfaces \
        --dhcp-range="$first,$last,255.255.255.0,${lease}s" --dhcp-authoritative --no-ping \
        --dhcp-option="option:router,$router" --dhcp-option="option:dns-server,$dns" "${timers[@]}" \
        --dhcp-leasefile="$dir/isp$isp.leases" --pid-file="$dir/isp$isp.pid" --user=root \
        --log-dhcp --log-facility="$dir/isp$isp.log"
}

wan_dhcp() {
    x app ip -4 addr flush dev wan0
    x app ip -4 addr flush dev wan1
    dhcp_server 1 100.64.1.100 100.64.1.199 120
    dhcp_server 2 100.64.2.100 100.64.2.199 120
}

down() {
    for n in $NODES rtr host; do
        ip netns pids "$(ns $n)" 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del "$(ns $n)" 2>/dev/null || true
    done
    rm -rf "/tmp/stayopen-testbed-$P-dhcp"
}

fault() {
    local kind="${1:?fault}"
    case "$kind" in
        blackhole) x "isp${2:?isp}" nft add rule inet fault forward drop ;;
        loss) x "isp${3:?isp}" nft add rule inet fault forward numgen random mod 100 "<" "${2:?pct}" drop ;;
        dead-target) x net nft add rule inet fault input ip daddr "${2:?address}" drop ;;
        carrier-down) x "isp${2:?isp}" ip link set down0 down ;;
        carrier-up) x "isp${2:?isp}" ip link set down0 up ;;
        clear)
            for isp in 1 2; do x "isp$isp" nft flush chain inet fault forward; x "isp$isp" ip link set down0 up; done
            x net nft flush chain inet fault input
            ;;
        *) echo "unknown fault $kind" >&2; exit 2 ;;
    esac
}

EHR_HTTPS_SERVER='
import http.server, ssl, sys
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("203.0.113.30", 443), Ok)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1] + "/server.pem", sys.argv[1] + "/server.key")
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
'

ehr_https() {
    local dir="${1:?dir}"
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" -subj "/CN=StayOpen testbed CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/CN=ehr.example" 2>/dev/null
    printf 'subjectAltName=IP:203.0.113.30,DNS:ehr.example\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > "$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 2 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
    x net python3 -c "$EHR_HTTPS_SERVER" "$dir" </dev/null >/dev/null 2>&1 &
}

router_up() {
    ip -n "$(ns lan)" link del eth0
    for n in rtr host; do ip netns add "$(ns $n)"; x "$n" ip link set lo up; done
    ip -n "$(ns rtr)" link add wan0 type veth peer name lan0 netns "$(ns app)"
    ip -n "$(ns rtr)" link add lan1 type veth peer name eth0 netns "$(ns host)"
    # The appliance's lan0 is left without an address: the agent's `lan.address` puts it there.
    x app ip link set lan0 up
    # The router's factory setup: its LAN, NAT out of its WAN port, which waits for a lease.
    x rtr ip addr add 100.64.20.1/24 dev lan1
    x rtr ip link set lan1 up
    x rtr ip link set wan0 up
    x rtr sysctl -qw net.ipv4.ip_forward=1
    x rtr nft -f - <<'NFT'
table ip router {
    chain nat { type nat hook postrouting priority srcnat; oifname "wan0" masquerade; }
}
NFT
    x host ip addr add 100.64.20.2/24 dev eth0
    x host ip link set eth0 up
    x host ip route add default via 100.64.20.1
}

# What a home router does with its WAN lease (busybox udhcpc calls it with the lease in its
# environment): address, default route, DNS servers for its forwarder.
UDHCPC_SCRIPT='#!/bin/sh
case "$1" in
    deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
    bound|renew)
        if ! ip -4 addr show dev "$interface" | grep -q " $ip/"; then
            ip -4 addr flush dev "$interface"
            ip addr add "$ip/${mask:-24}" dev "$interface"
        fi
        [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
        : > "$RESOLV.new"
        for s in $dns; do echo "nameserver $s" >> "$RESOLV.new"; done
        mv "$RESOLV.new" "$RESOLV"
        echo "$1 ip=$ip mask=$mask router=$router dns=$dns lease=$lease" >> "$LEASE_LOG"
        ;;
esac
'

router_dhcp() {
    local dir="${1:?dir}"
    mkdir -p "$dir"
    printf '%s' "$UDHCPC_SCRIPT" > "$dir/udhcpc.sh"
    chmod +x "$dir/udhcpc.sh"
    : > "$dir/rtr-resolv.conf"
    : > "$dir/rtr-lease.log"
    x rtr dnsmasq --conf-file=/dev/null --no-hosts --user=root --bind-interfaces \
        --listen-address=100.64.20.1 --resolv-file="$dir/rtr-resolv.conf" \
        --pid-file="$dir/rtr-dnsmasq.pid" --log-facility="$dir/rtr-dnsmasq.log" --log-queries
    x rtr env RESOLV="$dir/rtr-resolv.conf" LEASE_LOG="$dir/rtr-lease.log" \
        busybox udhcpc -f -i wan0 -s "$dir/udhcpc.sh" -t 30 -T 1 -A 1 \
        </dev/null >"$dir/udhcpc.log" 2>&1 &
}

resolvers() {
    local dir="${1:?dir}"
    mkdir -p "$dir"
    x net ip addr add 192.0.2.53/32 dev lo
    x net ip addr add 198.51.100.53/32 dev lo
    x net nft -f - <<'NFT'
table inet resolvers {
    chain input {
        type filter hook input priority 0; policy accept;
        ip daddr 192.0.2.53 ip saddr != 192.0.2.1 drop
        ip daddr 198.51.100.53 ip saddr != 198.51.100.1 drop
    }
}
NFT
    for r in "isp1 192.0.2.53" "isp2 198.51.100.53"; do
        set -- $r
        x net dnsmasq --conf-file=/dev/null --no-resolv --no-hosts --user=root --bind-interfaces \
            --listen-address="$2" --local=/ehr.example/ --local=/test.example/ \
            --address=/ehr.example/203.0.113.30 \
            --address=/test.example/203.0.113.30 --pid-file="$dir/dns-$1.pid" \
            --log-facility="$dir/dns-$1.log" --log-queries
    done
}

case "$ACTION" in
    up)
        down
        up
        if [ "${1:-}" = router ]; then router_up; fi
        if [ "${TESTBED_WAN_DHCP:-0}" = 1 ]; then wan_dhcp; fi
        ;;
    resolvers) resolvers "$@" ;;
    router-dhcp) router_dhcp "$@" ;;
    wan-dhcp) wan_dhcp ;;
    dhcp-server) dhcp_server "$@" ;;
    down) down ;;
    exec) x "$@" ;;
    ehr-https) ehr_https "$@" ;;
    fault) fault "$@" ;;
    *) echo "unknown action $ACTION" >&2; exit 2 ;;
esac
