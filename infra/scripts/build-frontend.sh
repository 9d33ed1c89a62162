#!/usr/bin/env bash
# Builds the dashboard into frontend/dist: the release wasm cut into the main module and the page
# modules fetched on first use (frontend/src/pages/mod.rs), its wasm-bindgen `--target web` glue,
# the splitter's loader (__wasm_split.js), index.html, boot.js (no inline script: the CSP forbids
# it) and style.css. The cloud serves that directory at `/`.
#
# Needs the wasm32-unknown-unknown target, the wasm-bindgen CLI matching the `wasm-bindgen` crate
# version pinned in Cargo.toml (0.2.130) and Leptos' splitter, wasm-split-cli (the crate
# wasm_split_cli_support); this script installs nothing (lib.sh's ensure_deps installs them). When
# binaryen's `wasm-opt` is installed, the main wasm is shrunk with `-Oz`; it is optional: without
# it (or with one too old, or failing) the build says so and goes on. Prints what a browser
# downloads, gzipped: to open the dashboard (the main wasm and the JavaScript), and each page module
# with the pieces it shares with others.
set -euo pipefail
# ROOT, CARGO_TARGET_DIR, tool_version and the ERR trap that names a failed command.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET="$CARGO_TARGET_DIR"
DIST="$ROOT/frontend/dist"

if ! command -v wasm-bindgen >/dev/null 2>&1; then
  echo "build-frontend: wasm-bindgen CLI not found; install it with" >&2
  echo "  cargo install wasm-bindgen-cli --version $WASM_BINDGEN_VERSION" >&2
  exit 1
fi
if ! command -v wasm-split-cli >/dev/null 2>&1; then
  echo "build-frontend: wasm-split-cli not found; install it with" >&2
  echo "  cargo install --locked wasm_split_cli_support --version $WASM_SPLIT_VERSION --features build-binary" >&2
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
# The splitter reads the linker's relocations (`--emit-relocs`, .cargo/config.toml) and writes the
# main module, one module per `#[wasm_split]` name, the pieces two or more of those share
# (chunk_N.wasm) and __wasm_split.js, which fetches them. wasm-bindgen then gives the main module its
# glue; `--keep-lld-exports` keeps the exports the page modules link against. Cargo names a binary's
# output after the bin target (`stayopen-frontend.wasm`, with a hyphen); `--out-name` gives the JS
# glue and the wasm the names boot.js and the loader import.
CODE="$STAGE/code"
mkdir "$CODE"
wasm-split-cli "$TARGET/wasm32-unknown-unknown/wasm-release/stayopen-frontend.wasm" "$CODE" \
  --out-name stayopen_frontend
wasm-bindgen --target web --no-typescript --keep-lld-exports --remove-producers-section \
  --out-name stayopen_frontend --out-dir "$CODE" "$CODE/stayopen_frontend.wasm"
rm "$CODE/stayopen_frontend.wasm"

WASM="$CODE/stayopen_frontend_bg.wasm"
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

# A build's code goes in a folder named after its content, `app-<hash>`, and boot.js and index.html
# name that folder: a tab opened before a new build keeps fetching its own build's page modules
# (or learns they are gone), never another build's, and the cloud lets browsers keep these files
# for good (cloud/src/http/mod.rs, `dashboard_caching`).
APP="app-$(cat "$CODE"/* | sha256sum | cut -c1-16)"
mv "$CODE" "$STAGE/$APP"
CODE="$STAGE/$APP"
WASM="$CODE/stayopen_frontend_bg.wasm"
sed "s#'/stayopen_frontend.js'#'/$APP/stayopen_frontend.js'#" "$ROOT/frontend/boot.js" >"$STAGE/boot.js"
sed "s#\"/stayopen_frontend.js\"#\"/$APP/stayopen_frontend.js\"#" "$ROOT/frontend/index.html" >"$STAGE/index.html"
cp "$ROOT/frontend/style.css" "$STAGE/"
{ grep -q "'/$APP/stayopen_frontend.js'" "$STAGE/boot.js" \
  && grep -q "\"/$APP/stayopen_frontend.js\"" "$STAGE/index.html"; } \
  || { echo "build-frontend: boot.js or index.html no longer imports /stayopen_frontend.js" >&2; exit 1; }

gzipped() { gzip -9 -c "$@" | wc -c; }
MAIN_WASM_GZ="$(gzipped "$WASM")"
OPENING="$((MAIN_WASM_GZ + $(gzipped "$CODE/stayopen_frontend.js") + $(gzipped "$CODE/__wasm_split.js")))"
# Each page module with the shared pieces it waits for: the loader lists them after the module's
# name, `__wasm_split_load_<name> = … makeLoad(…split_<name>.wasm…, [__chunk_5, __chunk_9 …])`.
PAGE_MODULES=()
for module in "$CODE"/split_*.wasm; do
  name="$(basename "$module" .wasm)"; name="${name#split_}"
  pieces=("$module")
  for chunk in $(awk -v name="__wasm_split_load_$name " '
      index($0, name) { found = 1 }
      found && /^, \[/ { gsub(/[^0-9,]/, ""); gsub(/,/, " "); print; exit }' "$CODE/__wasm_split.js"); do
    pieces+=("$CODE/chunk_$chunk.wasm")
  done
  bytes=0
  for piece in "${pieces[@]}"; do bytes=$((bytes + $(gzipped "$piece"))); done
  PAGE_MODULES+=("$name $bytes bytes in ${#pieces[@]} files")
done
chmod -R a+rX "$STAGE"
OLD="$STAGE.old"
if [ -e "$DIST" ]; then mv -T "$DIST" "$OLD"; fi
mv -T "$STAGE" "$DIST"
rm -rf "$OLD"
echo "build-frontend: $DIST (its code in $APP: $(find "$DIST/$APP" -type f | wc -l) files)"
ls -l "$DIST" "$DIST/$APP/stayopen_frontend_bg.wasm" "$DIST/$APP/stayopen_frontend.js" "$DIST/$APP/__wasm_split.js"
echo "build-frontend: opening the dashboard downloads $OPENING bytes gzipped (stayopen_frontend_bg.wasm $MAIN_WASM_GZ, stayopen_frontend.js, __wasm_split.js)"
for line in "${PAGE_MODULES[@]}"; do echo "build-frontend: page module $line, gzipped, fetched when first opened"; done
