#!/usr/bin/env bash
# Installs what is missing, builds mstore (a normal build with warnings as errors, an ASan+UBSan build,
# and a TSan build for the threaded tests) and runs the test suite in each through ctest. Exits
# non-zero on any failure.
#   MSTORE_TEST_SANITIZE=0  skip the sanitizer build (quicker local runs)
#   MSTORE_TEST_FUZZ=0      skip the fuzzing step (a clang build of tests/fuzz/: the corpus and the
#                           kept regression inputs replayed, then MSTORE_FUZZ_SECONDS of fuzzing, 60)
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
# The normal build's public-API tests link the release library (the installed one); the sanitizer
# builds link them against the debug variant, whose internal assertions and audit are on.
run_suite "release build" build/test "" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMSTORE_BUILD_TESTS=ON \
	-DMSTORE_BUILD_BENCH=ON -DMSTORE_TEST_LIB=release
if [ "${MSTORE_TEST_SANITIZE:-1}" != 0 ]; then
	# Criterion forks each test; ASan's leak checker runs in every child.
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
	run_suite "ASan+UBSan build" build/asan "" -DCMAKE_BUILD_TYPE=Debug -DMSTORE_SANITIZE=address,undefined \
		-DMSTORE_BUILD_TESTS=ON -DMSTORE_BUILD_BENCH=OFF -DMSTORE_TEST_LIB=debug
	# TSan runs the threaded tests: readers and writers sharing one handle.
	if ls tests/test_tsan.c >/dev/null 2>&1; then
		export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
		run_suite "TSan build" build/tsan "test_tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
			-DMSTORE_SANITIZE=thread -DMSTORE_BUILD_TESTS=ON -DMSTORE_BUILD_BENCH=OFF -DMSTORE_TEST_LIB=debug
	fi
fi
if [ "${MSTORE_TEST_FUZZ:-1}" != 0 ]; then
	# libFuzzer under ASan+UBSan (docs/reliability.md): any finding fails the run, and its input is
	# left in build/fuzz/findings/ to be kept in tests/fuzz/regress/ once fixed.
	dir=build/fuzz
	echo "== fuzzing: configure and build ($dir)"
	cmake -S . -B "$dir" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMSTORE_WERROR=ON \
		-DMSTORE_BUILD_FUZZ=ON -DMSTORE_BUILD_TESTS=OFF -DMSTORE_BUILD_BENCH=OFF \
		-DMSTORE_SANITIZE=address,undefined >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
	cmake --build "$dir" -j"$jobs" --target fuzz_store make_corpus
	rm -rf "$dir/corpus" "$dir/work" "$dir/findings"
	mkdir -p "$dir/work" "$dir/findings"
	"$dir/tests/fuzz/make_corpus" "$dir/corpus" >/dev/null
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
	regress=(tests/fuzz/regress/*.ms)
	[ -e "${regress[0]}" ] || regress=()
	echo "== fuzzing: replay the corpus and ${#regress[@]} regression inputs"
	"$dir/tests/fuzz/fuzz_store" "$dir"/corpus/*.ms "${regress[@]}" >"$dir/replay.log" 2>&1 ||
		{ tail -n 60 "$dir/replay.log"; exit 1; }
	echo "== fuzzing: ${MSTORE_FUZZ_SECONDS:-60} s, one worker"
	"$dir/tests/fuzz/fuzz_store" -max_total_time="${MSTORE_FUZZ_SECONDS:-60}" -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="$dir/findings/" -print_final_stats=1 "$dir/work" "$dir/corpus" >"$dir/fuzz.log" 2>&1 ||
		{ tail -n 80 "$dir/fuzz.log"; echo "fuzzing found a problem: the input is in $dir/findings/" >&2; exit 1; }
	grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$dir/fuzz.log" || true
fi
echo "== all test suites passed"
