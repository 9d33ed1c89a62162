#!/usr/bin/env bash
# The alert latency benchmark (issue 5): starts a private PostgreSQL the way test.sh does, runs
# `cargo bench -p stayopen-cloud --bench alert_latency` against it, and stops the PostgreSQL again
# if this script started it. Tuning goes through the environment, e.g.
# STAYOPEN_BENCH_APPLIANCES=50 STAYOPEN_BENCH_FAILOVERS=500 (see cloud/benches/alert_latency.rs).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

# The benchmark needs only PostgreSQL; ensure_deps also sets up the wasm tooling, so it runs only
# when PostgreSQL is missing.
pg_bindir >/dev/null || ensure_deps

pg_dir="$ROOT/.data/pg-bench"
if ! pg_run "$(pg_bindir)/pg_ctl" -D "$pg_dir" status >/dev/null 2>&1; then
    trap stop_pg EXIT
fi
start_pg "$pg_dir" "${STAYOPEN_BENCH_PG_PORT:-55434}"
ensure_app_role
export STAYOPEN_TEST_DATABASE_URL="$DATABASE_ADMIN_URL"

log "cargo bench -p stayopen-cloud --bench alert_latency"
cargo bench -p stayopen-cloud --bench alert_latency
