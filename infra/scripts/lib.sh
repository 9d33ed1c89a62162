# Shared helpers for the Quick start scripts. Sourced, not executed.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stayopen/target}"
WASM_BINDGEN_VERSION="0.2.130"
# Leptos' splitter (wasm-split-cli), which cuts the dashboard's pages into modules of their own.
WASM_SPLIT_VERSION="0.2.4"

# Each step says how long the run has taken so far (from the first script that sourced this file),
# so a slow CI run shows where its time went.
STAYOPEN_RUN_START="${STAYOPEN_RUN_START:-$(date +%s)}"
export STAYOPEN_RUN_START
log() {
    local elapsed=$(($(date +%s) - STAYOPEN_RUN_START))
    printf '\033[1;34m==>\033[0m [%d:%02d] %s\n' $((elapsed / 60)) $((elapsed % 60)) "$*" >&2
}
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# A script that sources this file and dies on a failed command (set -e) says which command, where,
# instead of stopping silently: `error: <script>:<line>: '<command>' failed (exit N)`. set -E passes
# the trap into functions and subshells; only the script's own shell reports, and only when errexit
# is on (the script is about to stop), so a failure a subshell or a `set +e` section handles is quiet.
on_err() {
    local status="$1" command="$2" script="$3" line="$4"
    [ "$BASH_SUBSHELL" -eq 0 ] || return 0
    case "$-" in *e*) ;; *) return 0 ;; esac
    printf '\033[1;31merror:\033[0m %s:%s: %s failed (exit %s)\n' \
        "${script#"$ROOT"/}" "$line" "'$command'" "$status" >&2
}
set -E
trap 'on_err "$?" "$BASH_COMMAND" "${BASH_SOURCE[0]:-$0}" "$LINENO"' ERR

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi
}

# The newest installed PostgreSQL's bin folder; fails (quietly) when there is none. No `ls | sort`
# pipeline: under pipefail a missing folder would fail it, and the ERR trap would report that.
pg_bindir() {
    local dir found=""
    while IFS= read -r dir; do
        if [ -x "$dir/initdb" ]; then found="$dir"; fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
    [ -n "$found" ] || return 1
    echo "$found"
}

# Field $2 of the first line of `$1 --version`, or nothing when $1 is missing or fails: optional
# tools must not stop a script (a bare `$(tool --version | awk ...)` exits 127 under pipefail).
tool_version() {
    local out=""
    command -v "$1" >/dev/null 2>&1 || return 0
    out="$("$1" --version 2>/dev/null)" || out=""
    awk -v field="$2" 'NR == 1 { print $field }' <<<"$out"
}

# Prints a PATH under which the named commands are not found, to run a script as on a machine
# without them: a new temporary folder (the PATH's only entry; the caller removes it) of symlinks to
# every other executable the current PATH finds, the first of each name as the shell would.
path_without() {
    local shadow dir file name hidden
    local -a dirs targets=()
    local -A seen=()
    for hidden in "$@"; do seen["$hidden"]=1; done
    shadow="$(mktemp -d "${TMPDIR:-/tmp}/stayopen-path.XXXXXX")"
    # Readable by all: PostgreSQL's tools run as the postgres user with this PATH.
    chmod 755 "$shadow"
    IFS=: read -ra dirs <<<"$PATH"
    for dir in "${dirs[@]}"; do
        [ -d "$dir" ] || continue
        for file in "$dir"/*; do
            name="${file##*/}"
            if [ -n "${seen[$name]:-}" ] || [ -d "$file" ] || [ ! -x "$file" ]; then continue; fi
            seen["$name"]=1
            targets+=("$file")
        done
    done
    if [ "${#targets[@]}" -gt 0 ]; then
        printf '%s\0' "${targets[@]}" | xargs -0 ln -s -t "$shadow" --
    fi
    echo "$shadow"
}

# Installs what is missing: Debian packages, the wasm32 target, wasm-bindgen-cli, wasm-split-cli.
# Arguments name optional extras: "browser" adds Chromium, ChromeDriver and Node.js (which runs
# the frontend's wasm unit tests); "netns" adds iproute2, nftables and conntrack for the
# network-namespace testbed; "mqtt" adds Mosquitto for the external-broker test; "smtp" adds
# aiosmtpd, the SMTP sink the e-mail notification tests deliver to.
ensure_deps() {
    local packages=()
    pg_bindir >/dev/null || packages+=(postgresql)
    command -v curl >/dev/null || packages+=(curl)
    # demo.sh --check reads the API's JSON with it.
    [ -x /usr/bin/python3 ] || packages+=(python3)
    for extra in "$@"; do
        case "$extra" in
            netns)
                command -v ip >/dev/null || packages+=(iproute2)
                command -v nft >/dev/null || packages+=(nftables)
                command -v conntrack >/dev/null || packages+=(conntrack)
                # The testbed's ISP resolvers and router (issue 17): dnsmasq (no service), udhcpc.
                [ -x /usr/sbin/dnsmasq ] || command -v dnsmasq >/dev/null || packages+=(dnsmasq-base)
                command -v busybox >/dev/null || packages+=(busybox)
                command -v systemd-analyze >/dev/null || packages+=(systemd)
                /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || packages+=(python3-venv)
                # The private message bus the fake ModemManager of the cellular tests runs on.
                command -v dbus-daemon >/dev/null || packages+=(dbus-daemon)
                ;;
            mqtt)
                [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || packages+=(mosquitto)
                # The scale-out test's load balancer in front of two cloud instances (issue 18).
                [ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null || packages+=(haproxy)
                ;;
            smtp)
                /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || packages+=(python3-aiosmtpd)
                ;;
            browser)
                command -v chromium >/dev/null || packages+=(chromium)
                command -v chromedriver >/dev/null || packages+=(chromium-driver)
                command -v node >/dev/null || packages+=(nodejs)
                # wasm-opt shrinks the dashboard's wasm (build-frontend.sh uses it when present).
                command -v wasm-opt >/dev/null || packages+=(binaryen)
                ;;
        esac
    done
    if [ "${#packages[@]}" -gt 0 ]; then
        log "installing Debian packages: ${packages[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    fi
    command -v cargo >/dev/null && command -v rustup >/dev/null \
        || die "Rust is not installed (cargo and rustup); see https://rustup.rs"
    local targets=""
    targets="$(rustup target list --installed 2>/dev/null)" || targets=""
    if ! grep -qx wasm32-unknown-unknown <<<"$targets"; then
        log "adding the wasm32-unknown-unknown target"
        rustup target add wasm32-unknown-unknown
    fi
    if [ "$(tool_version wasm-bindgen 2)" != "$WASM_BINDGEN_VERSION" ]; then
        log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (once; takes a few minutes)"
        # Not --locked: its lockfile names a crate version the registry here lacks.
        cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
    fi
    # It prints no version; cargo's list of installed crates says which one it is.
    if ! command -v wasm-split-cli >/dev/null \
        || ! cargo install --list | grep -qx "wasm_split_cli_support v$WASM_SPLIT_VERSION:"; then
        log "installing wasm-split-cli $WASM_SPLIT_VERSION (once; takes a minute or two)"
        cargo install --locked wasm_split_cli_support --version "$WASM_SPLIT_VERSION" --features build-binary
    fi
}

# A private PostgreSQL cluster in $1 (a folder inside the repo, git-ignored) on port $2, owned by
# the postgres user when run as root (PostgreSQL refuses to run as root). Sets DATABASE_ADMIN_URL.
PG_DATA=""
pg_run() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_pg() {
    PG_DATA="$1"
    local port="$2" bindir
    bindir="$(pg_bindir)" || die "PostgreSQL binaries not found"
    mkdir -p "$PG_DATA"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$PG_DATA"; chmod 700 "$PG_DATA"; fi
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
        log "creating a private PostgreSQL cluster in ${PG_DATA#"$ROOT"/}"
        pg_run "$bindir/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
    fi
    if pg_run "$bindir/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        log "PostgreSQL already running in ${PG_DATA#"$ROOT"/}"
    else
        log "starting PostgreSQL on 127.0.0.1:$port"
        pg_run "$bindir/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DATA -c fsync=off -c max_connections=200" start >/dev/null \
            || { cat "$PG_DATA/server.log" >&2; die "PostgreSQL did not start"; }
    fi
    DATABASE_ADMIN_URL="postgres://postgres@127.0.0.1:$port/postgres"
    export DATABASE_ADMIN_URL
}

stop_pg() { # [$1 = data folder; the one start_pg started by default]
    local data="${1:-$PG_DATA}" bindir
    [ -n "$data" ] || return 0
    bindir="$(pg_bindir)" || return 0
    if pg_run "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        log "stopping PostgreSQL"
        pg_run "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
    fi
}

# The role the cloud connects as (see migrations/*_tenancy.sql). The local clusters trust loopback
# connections, so it needs LOGIN but no password; a real deployment sets one.
ensure_app_role() {
    psql "$DATABASE_ADMIN_URL" -qc "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stayopen_app') THEN
            CREATE ROLE stayopen_app LOGIN NOSUPERUSER NOBYPASSRLS;
        ELSE
            ALTER ROLE stayopen_app LOGIN;
        END IF;
    END \$\$" >/dev/null
}

create_db() { # $1 = name; uses DATABASE_ADMIN_URL
    psql "$DATABASE_ADMIN_URL" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$1'" | grep -q 1 \
        || psql "$DATABASE_ADMIN_URL" -qc "CREATE DATABASE \"$1\"" >/dev/null
}

# cargo-deb, which builds the appliance's Debian package (infra/scripts/build-deb.sh); installed once.
CARGO_DEB_VERSION="3.8.0"
ensure_cargo_deb() {
    if [ "$(tool_version cargo-deb 2)" != "$CARGO_DEB_VERSION" ]; then
        log "installing cargo-deb $CARGO_DEB_VERSION (once; takes a few minutes)"
        cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
    fi
}
