#!/usr/bin/env bash
# The outbox benchmarks (issue 12), release builds: the appliance's write throughput and disk per
# hour of outage (`cargo bench -p stayopen-appliance --bench outbox`), then the time to drain one
# hour and one day of backlog into a real cloud on a private PostgreSQL
# (`cargo bench -p stayopen-cloud --bench outbox_drain`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

pg_bindir >/dev/null || ensure_deps

log "cargo bench -p stayopen-appliance --bench outbox"
cargo bench -p stayopen-appliance --bench outbox

pg_dir="$ROOT/.data/pg-bench"
if ! pg_run "$(pg_bindir)/pg_ctl" -D "$pg_dir" status >/dev/null 2>&1; then
    trap stop_pg EXIT
fi
start_pg "$pg_dir" "${STAYOPEN_BENCH_PG_PORT:-55434}"
ensure_app_role
export STAYOPEN_TEST_DATABASE_URL="$DATABASE_ADMIN_URL"

log "cargo bench -p stayopen-cloud --bench outbox_drain"
cargo bench -p stayopen-cloud --bench outbox_drain
