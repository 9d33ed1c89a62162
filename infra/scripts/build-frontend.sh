#!/usr/bin/env bash
# Builds the dashboard into frontend/dist: the release wasm, its wasm-bindgen `--target web` glue,
# index.html, boot.js (no inline script: the CSP forbids it) and style.css. The cloud serves that directory at `/`.
#
# Needs the wasm32-unknown-unknown target and the wasm-bindgen CLI matching the `wasm-bindgen` crate
# version pinned in Cargo.toml (0.2.130); this script installs nothing. When binaryen's `wasm-opt` is
# installed (lib.sh's ensure_deps browser installs it), the wasm is shrunk with `-Oz`. Prints the
# gzipped size of the wasm, the number that decides how fast the dashboard opens. wasm-opt is
# optional: without it (or with one too old, or failing) the build says so and goes on.
set -euo pipefail
# ROOT, CARGO_TARGET_DIR, tool_version and the ERR trap that names a failed command.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET="$CARGO_TARGET_DIR"
DIST="$ROOT/frontend/dist"

if ! command -v wasm-bindgen >/dev/null 2>&1; then
  echo "build-frontend: wasm-bindgen CLI not found; install it with" >&2
  echo "  cargo install wasm-bindgen-cli --version 0.2.130" >&2
  exit 1
fi

cd "$ROOT"
CARGO_TARGET_DIR="$TARGET" cargo build --profile wasm-release -p stayopen-frontend --target wasm32-unknown-unknown

# The new dist is put together in a staging folder (in the git-ignored .data, on the same file
# system) and swapped in at the end, so a cloud serving frontend/dist meanwhile (a demo, a test)
# never sees it empty or half-written.
mkdir -p "$ROOT/.data"
STAGE="$(mktemp -d "$ROOT/.data/frontend-dist.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
# Cargo names a binary's output after the bin target (`stayopen-frontend.wasm`, with a hyphen);
# `--out-name` gives the JS glue and the wasm the names index.html imports.
wasm-bindgen --target web --no-typescript --out-name stayopen_frontend --out-dir "$STAGE" \
  "$TARGET/wasm32-unknown-unknown/wasm-release/stayopen-frontend.wasm"
cp "$ROOT/frontend/index.html" "$ROOT/frontend/boot.js" "$ROOT/frontend/style.css" "$STAGE/"

WASM="$STAGE/stayopen_frontend_bg.wasm"
# wasm-bindgen hands JS objects to the wasm through an externref table. Debian bookworm's binaryen
# (108) rewrites that table's type into one browsers refuse ("WebAssembly.Table.set(): Argument 1 is
# invalid"), so only a newer wasm-opt is used (checked with 132). After whole-program LTO at
# opt-level "z" it saves little (under 1 %), so the build does not depend on it.
# `wasm-opt --version` prints "wasm-opt version 116 (version_116)"; nothing when it is not installed.
WASM_OPT_VERSION="$(tool_version wasm-opt 3)"
if ! command -v wasm-opt >/dev/null 2>&1; then
  echo "build-frontend: wasm-opt not found (Debian package binaryen); skipped, the wasm is not size-optimised further" >&2
elif ! [ "$WASM_OPT_VERSION" -ge 116 ] 2>/dev/null; then
  echo "build-frontend: wasm-opt ${WASM_OPT_VERSION:-of unknown version} is older than 116 and breaks wasm-bindgen's externref table; skipped" >&2
elif wasm-opt -Oz --enable-bulk-memory --enable-mutable-globals --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-reference-types --enable-multivalue \
    -o "$WASM.opt" "$WASM"; then
  mv "$WASM.opt" "$WASM"
else
  rm -f "$WASM.opt"
  echo "build-frontend: wasm-opt $WASM_OPT_VERSION failed; skipped, the wasm is not size-optimised further" >&2
fi

SIZE="$(gzip -9 -c "$WASM" | wc -c)"
chmod 755 "$STAGE"
OLD="$STAGE.old"
if [ -e "$DIST" ]; then mv -T "$DIST" "$OLD"; fi
mv -T "$STAGE" "$DIST"
rm -rf "$OLD"
echo "build-frontend: $DIST"
ls -l "$DIST"
echo "build-frontend: stayopen_frontend_bg.wasm is $SIZE bytes gzipped"
