#!/usr/bin/env bash
# The tunnel throughput benchmark: builds the agent (stayopen-appliance), the relay
# (stayopen-relay) and the testbed tools (stayopen-testbed) in release, then runs
# `stayopen-testbed bench-tunnel` in network namespaces (root): TCP from the LAN host to one server,
# through the relay and directly, side by side in one run, with the CPU the agent and the relay
# spend per Mbit. Extra arguments go to the benchmark, e.g. --secs 20 --rounds 5.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_deps netns
cargo build --release -p stayopen-appliance -p stayopen-tunnel -p stayopen-testkit \
    --bin stayopen-appliance --bin stayopen-relay --bin stayopen-testbed
exec "$CARGO_TARGET_DIR/release/stayopen-testbed" bench-tunnel "$@"
