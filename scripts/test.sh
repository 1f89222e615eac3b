#!/usr/bin/env bash
# Installs what is missing, builds mstore twice (a normal build with warnings as errors, and an
# ASan+UBSan build) and runs the whole test suite in each through ctest. Exits non-zero on any failure.
#   MSTORE_TEST_SANITIZE=0  skip the sanitizer build (quicker local runs)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc 2>/dev/null || echo 2)

run_suite() { # name, build dir, cmake args...
	local name=$1 dir=$2
	shift 2
	echo "== $name: configure and build ($dir)"
	cmake -S . -B "$dir" -DMSTORE_WERROR=ON "$@" >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; return 1; }
	cmake --build "$dir" -j"$jobs"
	echo "== $name: tests"
	ctest --test-dir "$dir" --output-on-failure --timeout 900
}

mkdir -p build
run_suite "release build" build/test -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "${MSTORE_TEST_SANITIZE:-1}" != 0 ]; then
	# Criterion forks each test; ASan's leak checker runs in every child.
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
	run_suite "ASan+UBSan build" build/asan -DCMAKE_BUILD_TYPE=Debug -DMSTORE_SANITIZE=address,undefined \
		-DMSTORE_BUILD_BENCH=OFF
fi
echo "== all test suites passed"
