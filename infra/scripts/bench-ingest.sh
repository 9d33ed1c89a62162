#!/usr/bin/env bash
# Ingest at load (issue 18): starts a private PostgreSQL, runs
# `cargo bench -p stayopen-cloud --bench ingest_load` (a release build: 10,000 appliances,
# 200,000 messages drained, then 20,000 messages/s offered for 30 s with failover events and fleet
# page loads beside them; INGEST_APPLIANCES, INGEST_MESSAGES, INGEST_RATE, INGEST_STEADY_SECS,
# INGEST_EVENT_EVERY_MS and INGEST_PAGE_EVERY_MS change it) and stops the PostgreSQL again if this
# script started it. Prints Markdown tables: messages/s stored, lost and duplicated; event → alert
# and fleet page latencies at that load.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

pg_bindir >/dev/null || ensure_deps

pg_dir="$ROOT/.data/pg-bench-ingest"
if ! pg_run "$(pg_bindir)/pg_ctl" -D "$pg_dir" status >/dev/null 2>&1; then
    trap stop_pg EXIT
fi
start_pg "$pg_dir" "${STAYOPEN_BENCH_PG_PORT:-55438}"
ensure_app_role
export STAYOPEN_TEST_DATABASE_URL="$DATABASE_ADMIN_URL"

log "cargo bench -p stayopen-cloud --bench ingest_load"
cargo bench -p stayopen-cloud --bench ingest_load
