#!/usr/bin/env bash
# Builds the dashboard into frontend/dist: the release wasm, its wasm-bindgen `--target web` glue,
# index.html and style.css. The cloud serves that directory at `/`.
#
# Needs the wasm32-unknown-unknown target and the wasm-bindgen CLI matching the `wasm-bindgen` crate
# version pinned in Cargo.toml (0.2.130); this script installs nothing. When binaryen's `wasm-opt` is
# installed (lib.sh's ensure_deps browser installs it), the wasm is shrunk with `-Oz`. Prints the
# gzipped size of the wasm, the number that decides how fast the dashboard opens.
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
CARGO_TARGET_DIR="$TARGET" cargo build --profile wasm-release -p stayopen-frontend --target wasm32-unknown-unknown

rm -rf "$DIST"
mkdir -p "$DIST"
# Cargo names a binary's output after the bin target (`stayopen-frontend.wasm`, with a hyphen);
# `--out-name` gives the JS glue and the wasm the names index.html imports.
wasm-bindgen --target web --no-typescript --out-name stayopen_frontend --out-dir "$DIST" \
  "$TARGET/wasm32-unknown-unknown/wasm-release/stayopen-frontend.wasm"
cp "$ROOT/frontend/index.html" "$ROOT/frontend/style.css" "$DIST/"

WASM="$DIST/stayopen_frontend_bg.wasm"
# wasm-bindgen hands JS objects to the wasm through an externref table. Debian bookworm's binaryen
# (108) rewrites that table's type into one browsers refuse ("WebAssembly.Table.set(): Argument 1 is
# invalid"), so only a newer wasm-opt is used (checked with 132). After whole-program LTO at
# opt-level "z" it saves little (under 1 %), so the build does not depend on it.
WASM_OPT_VERSION="$(wasm-opt --version 2>/dev/null | awk '{print $3}')"
if [ -n "$WASM_OPT_VERSION" ] && [ "$WASM_OPT_VERSION" -ge 116 ] 2>/dev/null; then
  wasm-opt -Oz --enable-bulk-memory --enable-mutable-globals --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-reference-types --enable-multivalue \
    -o "$WASM.opt" "$WASM"
  mv "$WASM.opt" "$WASM"
elif [ -n "$WASM_OPT_VERSION" ]; then
  echo "build-frontend: wasm-opt $WASM_OPT_VERSION is older than 116 and breaks wasm-bindgen's externref table; not used" >&2
else
  echo "build-frontend: wasm-opt not found (Debian package binaryen); the wasm is not size-optimised further" >&2
fi

echo "build-frontend: $DIST"
ls -l "$DIST"
echo "build-frontend: stayopen_frontend_bg.wasm is $(gzip -9 -c "$WASM" | wc -c) bytes gzipped"
