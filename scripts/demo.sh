#!/usr/bin/env bash
# demo.sh [BUILD_DIR] - a guided tour: runs the mstore_demo example on a fresh store in a temporary
# folder, then looks at the result with the mstore tool. Builds nothing; build first with
#   cmake -S . -B build && cmake --build build
set -euo pipefail

build=${1:-./build}
mstore=$build/tools/mstore
demo=$build/examples/mstore_demo
for exe in "$mstore" "$demo"; do
  if [ ! -x "$exe" ]; then
    echo "demo.sh: $exe not found; build first (cmake -S . -B $build && cmake --build $build)" >&2
    exit 1
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mstore-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
store=$tmp/demo.ms

heading() { printf '\n== %s\n' "$*"; }

heading "mstore_demo $store: the example program writes, overwrites, deletes and verifies objects"
"$demo" "$store"

heading "mstore stat: what the store holds and how its space is used"
"$mstore" stat "$store"

# Saved to a file first: piping into head would end mstore early with SIGPIPE, which
# pipefail rightly counts as a failure.
heading "mstore ls | head: the first 10 of $("$mstore" ls "$store" --count) keys, sorted"
"$mstore" ls "$store" > "$tmp/keys"
head -n 10 "$tmp/keys"

heading "mstore get greeting: a value, written to standard output byte for byte"
"$mstore" get "$store" greeting

heading "mstore check: verify every page, node and object checksum (exit 0 means sound)"
"$mstore" check "$store"

printf '\nDemo finished; the temporary folder %s is removed.\n' "$tmp"
