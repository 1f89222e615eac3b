#!/usr/bin/env bash
# Installs what is missing, builds mstore (Release) into ./build and runs the demo: a store is
# created in a temporary folder, filled, inspected and checked.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMSTORE_BUILD_TESTS=OFF >build.configure.log 2>&1 ||
	{ cat build.configure.log; exit 1; }
rm -f build.configure.log
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
exec bash scripts/demo.sh build
