#!/usr/bin/env bash
# test.sh — the whole test suite, from a fresh clone on a clean Debian 12.
#
#   1. installs every missing package (apt-get update + apt-get install -y),
#   2. configures and builds everything with warnings as errors,
#   3. installs the softadastra extension into the local PostgreSQL 15,
#   4. runs every test through ctest (unit, integration against real
#      PostgreSQL clusters started by tests/harness, pg_regress, bench smoke),
#   5. builds the unit tests again with AddressSanitizer + UBSan and runs them.
#
# Environment: SA_JOBS (build/test parallelism, default nproc),
# SA_CRASH_ITERS (SIGKILLs in the crash test, default 200),
# SA_SKIP_ASAN=1 (skip step 5 while iterating locally).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
top=$(pwd)
. "$top/scripts/deps.sh"
sa_install_deps

jobs=${SA_JOBS:-$(nproc)}
export SA_TEST_TMPDIR=${SA_TEST_TMPDIR:-$top/build/tmp}

echo "== configure and build (warnings are errors)"
cmake -S "$top" -B "$top/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSA_WERROR=ON >/dev/null
cmake --build "$top/build" -j "$jobs"

echo "== install the softadastra extension into $(pg_config_path)"
if [ "$(id -u)" = 0 ]; then
  cmake --build "$top/build" --target pgext_install >/dev/null
else
  echo "   not root: skipping the install (the extension smoke test will say so)"
fi

echo "== ctest"
mkdir -p "$SA_TEST_TMPDIR"
ctest --test-dir "$top/build" --output-on-failure -j "$jobs"

if [ "${SA_SKIP_ASAN:-0}" != 1 ]; then
  echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
  cmake -S "$top" -B "$top/build-asan" -DCMAKE_BUILD_TYPE=Debug -DSA_WERROR=ON \
        -DSA_SANITIZE=ON -DSA_UNIT_ONLY=ON >/dev/null
  cmake --build "$top/build-asan" -j "$jobs"
  mkdir -p "$top/build-asan/tmp"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  SA_TEST_TMPDIR="$top/build-asan/tmp" \
    ctest --test-dir "$top/build-asan" -L unit --output-on-failure -j "$jobs"
fi
echo "== all tests passed"
