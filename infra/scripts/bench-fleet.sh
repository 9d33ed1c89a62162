#!/usr/bin/env bash
# The dashboard at fleet size (issue 6): starts a private PostgreSQL, runs
# `cargo bench -p stayopen-cloud --bench fleet_overview` (10,000 appliances in 500 practices by
# default; FLEET_APPLIANCES, FLEET_PRACTICES and FLEET_SAMPLES change it) and stops the PostgreSQL
# again if this script started it. Prints a Markdown table of response times.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

pg_bindir >/dev/null || ensure_deps

pg_dir="$ROOT/.data/pg-bench-fleet"
if ! pg_run "$(pg_bindir)/pg_ctl" -D "$pg_dir" status >/dev/null 2>&1; then
    trap stop_pg EXIT
fi
start_pg "$pg_dir" "${STAYOPEN_BENCH_PG_PORT:-55436}"
ensure_app_role
export STAYOPEN_TEST_DATABASE_URL="$DATABASE_ADMIN_URL"

log "cargo bench -p stayopen-cloud --bench fleet_overview"
cargo bench -p stayopen-cloud --bench fleet_overview
