#!/usr/bin/env bash
# Installs what is missing, builds mstore (a normal build with warnings as errors, an ASan+UBSan build,
# and a TSan build for the threaded tests) and runs the test suite in each through ctest. Exits
# non-zero on any failure.
#   MSTORE_TEST_SANITIZE=0  skip the sanitizer build (quicker local runs)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc 2>/dev/null || echo 2)

run_suite() { # name, build dir, ctest regex (empty: all), cmake args...
	local name=$1 dir=$2 only=$3
	shift 3
	echo "== $name: configure and build ($dir)"
	cmake -S . -B "$dir" -DMSTORE_WERROR=ON "$@" >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; return 1; }
	cmake --build "$dir" -j"$jobs"
	echo "== $name: tests"
	ctest --test-dir "$dir" --output-on-failure --timeout 900 ${only:+-R "$only"}
}

mkdir -p build
run_suite "release build" build/test "" -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "${MSTORE_TEST_SANITIZE:-1}" != 0 ]; then
	# Criterion forks each test; ASan's leak checker runs in every child.
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
	run_suite "ASan+UBSan build" build/asan "" -DCMAKE_BUILD_TYPE=Debug -DMSTORE_SANITIZE=address,undefined \
		-DMSTORE_BUILD_BENCH=OFF
	# TSan runs the threaded tests: readers and writers sharing one handle.
	if ls tests/test_tsan.c >/dev/null 2>&1; then
		export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
		run_suite "TSan build" build/tsan "test_tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
			-DMSTORE_SANITIZE=thread -DMSTORE_BUILD_BENCH=OFF
	fi
fi
echo "== all test suites passed"
