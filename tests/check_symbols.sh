#!/bin/sh
# tests/check_symbols.sh STATIC_LIB SHARED_LIB - the installed libraries define no symbol outside the
# ms_ namespace (a program with its own table_init or err_set must link against them), and both
# define the same public ones. Exit 1, naming the symbols, otherwise.
set -eu
static=$1
shared=$2
tmp=${TMPDIR:-/tmp}/mstore-symbols.$$
trap 'rm -f "$tmp".*' EXIT
nm -g --defined-only "$static" | awk 'NF >= 3 { print $3 }' | sort -u >"$tmp.static"
nm -D --defined-only "$shared" | awk 'NF >= 3 { print $3 }' | sort -u >"$tmp.shared"
status=0
for lib in static shared; do
	n=$(wc -l <"$tmp.$lib")
	if [ "$n" -eq 0 ]; then
		echo "$lib library: no defined symbols (nm failed?)"
		status=1
	fi
	if grep -v '^ms_' "$tmp.$lib" >"$tmp.bad"; then
		echo "$lib library defines $(wc -l <"$tmp.bad") symbol(s) outside the ms_ namespace:"
		sed 's/^/  /' "$tmp.bad"
		status=1
	fi
done
if ! cmp -s "$tmp.static" "$tmp.shared"; then
	echo "the static and the shared library define different public symbols:"
	diff "$tmp.static" "$tmp.shared" | sed 's/^/  /' || true
	status=1
fi
[ "$status" -eq 0 ] && echo "symbols: $(wc -l <"$tmp.static") defined, all ms_*, the same in both libraries"
exit "$status"
