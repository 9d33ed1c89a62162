#!/usr/bin/env bash
# The failover benchmark: builds the agent (stayopen-appliance) and the testbed tools
# (stayopen-testbed, from the testkit crate), then runs `stayopen-testbed bench` in network
# namespaces (root). Extra arguments go to the benchmark, e.g. --trials 5 --soak-secs 60.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_deps netns
cargo build --release -p stayopen-appliance -p stayopen-testkit \
    --bin stayopen-appliance --bin stayopen-testbed
exec "$CARGO_TARGET_DIR/release/stayopen-testbed" bench "$@"
