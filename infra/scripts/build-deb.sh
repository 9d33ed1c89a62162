#!/usr/bin/env bash
# Builds the appliance's Debian package and prints its path (the only thing on stdout).
#
#   bash infra/scripts/build-deb.sh            # the release build: what goes on an appliance
#   bash infra/scripts/build-deb.sh --dev      # the dev-profile binary the tests already built (CI)
#
# The package: /usr/bin/stayopen-appliance, the hardened unit (infra/systemd/stayopen-appliance.service,
# enabled, idle until /etc/stayopen/appliance.toml exists), the `stayopen` system user
# (sysusers.d), an example configuration (/etc/stayopen/appliance.example.toml, a conffile) and the
# configuration reference. Metadata: [package.metadata.deb] in appliance/Cargo.toml.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

profile=release
case "${1:-}" in
    "") ;;
    --dev) profile=dev ;;
    *) die "usage: build-deb.sh [--dev]" ;;
esac

ensure_cargo_deb
out_dir="$CARGO_TARGET_DIR/debian"
mkdir -p "$out_dir"
if [ "$profile" = dev ]; then
    # cargo-deb wants to build release binaries itself; here it packages the dev binary as built
    # (it warns that dev profiles are meant for tests, which is what this one is for).
    log "building stayopen-appliance (dev profile)"
    cargo build -q -p stayopen-appliance --bin stayopen-appliance >&2
    deb="$out_dir/stayopen-appliance_dev_$(dpkg --print-architecture).deb"
    cargo deb -q -p stayopen-appliance --profile dev --no-build --fast --output "$deb" >&2
else
    log "building stayopen-appliance (release profile) and its package"
    deb="$out_dir/stayopen-appliance_$(cargo metadata --no-deps --format-version 1 \
        | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "stayopen-appliance"))')-1_$(dpkg --print-architecture).deb"
    cargo deb -q -p stayopen-appliance --output "$deb" >&2
fi
[ -f "$deb" ] || die "cargo deb wrote no $deb"
echo "$deb"
