#!/usr/bin/env bash
# Installs the Debian packages mstore needs to build, test and benchmark, when any is missing.
# Safe to run again: it does nothing when everything is there.
set -euo pipefail
# libclang-rt-14-dev: the libFuzzer and sanitizer runtimes of clang 14 (not pulled in by clang itself).
pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev liblmdb-dev lmdb-utils liburing-dev libzstd-dev
      libxxhash-dev libcriterion-dev valgrind)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
