#!/usr/bin/env bash
# Builds the dashboard into frontend/dist: the release wasm, its wasm-bindgen `--target web` glue,
# index.html and style.css. The cloud serves that directory at `/`.
#
# Needs the wasm32-unknown-unknown target and the wasm-bindgen CLI matching the `wasm-bindgen` crate
# version pinned in Cargo.toml (0.2.130); this script installs nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/stayopen/target}"
DIST="$ROOT/frontend/dist"

if ! command -v wasm-bindgen >/dev/null 2>&1; then
  echo "build-frontend: wasm-bindgen CLI not found; install it with" >&2
  echo "  cargo install wasm-bindgen-cli --version 0.2.130" >&2
  exit 1
fi

cd "$ROOT"
CARGO_TARGET_DIR="$TARGET" cargo build --release -p stayopen-frontend --target wasm32-unknown-unknown

rm -rf "$DIST"
mkdir -p "$DIST"
# Cargo names a binary's output after the bin target (`stayopen-frontend.wasm`, with a hyphen);
# `--out-name` gives the JS glue and the wasm the names index.html imports.
wasm-bindgen --target web --no-typescript --out-name stayopen_frontend --out-dir "$DIST" \
  "$TARGET/wasm32-unknown-unknown/release/stayopen-frontend.wasm"
cp "$ROOT/frontend/index.html" "$ROOT/frontend/style.css" "$DIST/"

echo "build-frontend: $DIST"
ls -l "$DIST"
