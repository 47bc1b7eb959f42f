#!/usr/bin/env bash
# Build-level promises of the foundation:
#  1. a missing dependency stops configure with the Debian package to install;
#  2. libsa_storage never prints (errors are returned, only programs print).
set -u
src=${SA_SOURCE_DIR:?}
bin=${SA_BINARY_DIR:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# 1. pkg-config that finds nothing: configure must fail and name the package
out=$(PKG_CONFIG_LIBDIR=/nonexistent PKG_CONFIG_PATH= cmake -S "$src" -B "$tmp/b" 2>&1)
[ $? -ne 0 ] || fail "configure succeeded without any pkg-config module"
echo "$out" | grep -q "apt-get install librocksdb-dev" ||
  fail "configure did not name the Debian package of the missing dependency: $out"
echo "ok - a missing dependency names its Debian package"

# 2. no output functions among the library's undefined symbols
lib="$bin/storage/libsa_storage.a"
[ -f "$lib" ] || fail "$lib not built"
bad=$(nm -u "$lib" 2>/dev/null | awk '{print $2}' | sort -u |
      grep -E '^(printf|fprintf|vprintf|vfprintf|puts|fputs|putchar|perror|fwrite|__printf_chk|__fprintf_chk|__vfprintf_chk)$')
[ -z "$bad" ] || fail "libsa_storage calls output functions: $bad"
echo "ok - libsa_storage never prints"
