#!/usr/bin/env bash
# test_install.sh — what `cmake --install` puts on a machine, and that it is
# usable as installed:
#  1. `cmake --install --prefix P` installs exactly the binaries, libsa_edge
#     (shared, exporting only its API), its headers, sa_edge.pc naming P and
#     the two man pages — nothing more;
#  2. a C program built with nothing but `pkg-config --cflags --libs sa_edge`
#     against P opens (create), closes and reopens an edge store;
#  3. the man pages render without warnings and document what --help says;
#  4. with DESTDIR, files land under it while sa_edge.pc names the configured
#     prefix; the component "pgext" installs the extension (control, scripts,
#     module) under DESTDIR at pg_config's paths, and only that component does.
# Reuses the build tree $SA_BINARY_DIR (as ctest runs it); without it,
# configures and builds one in the temporary directory.  Installs only into
# a temporary directory, never into the system.
set -euo pipefail
# Never `producer | grep -q`: with pipefail, grep's early exit can make the
# producer die of SIGPIPE and the test fail at random.  Outputs are captured
# first, then searched.

src=${SA_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
mkdir -p "${SA_TEST_TMPDIR:-/tmp}"
tmp=$(mktemp -d "${SA_TEST_TMPDIR:-/tmp}/install_sh_test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

if [[ -n ${SA_BINARY_DIR:-} ]]; then
    bin=$SA_BINARY_DIR
else
    bin=$tmp/build
    echo "# no SA_BINARY_DIR: configuring and building in $bin"
    cmake -S "$src" -B "$bin" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSA_WERROR=ON >/dev/null
    cmake --build "$bin" -j "$(nproc)" >/dev/null
fi
[[ -f $bin/CMakeCache.txt ]] || fail "$bin is not a configured build tree"
for f in bridge/sa-bridge edge/sa-edge; do
    [[ -x $bin/$f ]] || fail "$bin/$f is not built"
done

# The configured install dirs (GNUInstallDirs caches an empty MANDIR and
# DATAROOTDIR for their defaults).
cache() { sed -n "s/^$1:[A-Z]*=//p" "$bin/CMakeCache.txt"; }
libdir=$(cache CMAKE_INSTALL_LIBDIR)
incdir=$(cache CMAKE_INSTALL_INCLUDEDIR)
bindir=$(cache CMAKE_INSTALL_BINDIR)
datarootdir=$(cache CMAKE_INSTALL_DATAROOTDIR)
mandir=$(cache CMAKE_INSTALL_MANDIR)
mandir=${mandir:-${datarootdir:-share}/man}
conf_prefix=$(cache CMAKE_INSTALL_PREFIX)
pg_config=$(cache PG_CONFIG)
grep -q '^SA_MANPAGES:BOOL=ON' "$bin/CMakeCache.txt" ||
    fail "$bin is configured with SA_MANPAGES=OFF: this test checks the man pages"
for d in "$libdir" "$incdir" "$mandir" "$bindir"; do
    [[ -n $d && $d != /* ]] || fail "install dirs must be relative to the prefix for this test ('$d')"
done
version=$("$bin/edge/sa-edge" --version | awk '{print $2}')
[[ $version =~ ^([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || fail "sa-edge --version said '$version'"
soname=libsa_edge.so.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}

# --- 1. cmake --install --prefix ------------------------------------------
prefix=$tmp/prefix
cmake --install "$bin" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "cmake --install --prefix failed"; }

expected=(
    "$bindir/sa-bridge"
    "$bindir/sa-edge"
    "$libdir/libsa_edge.so"
    "$libdir/$soname"
    "$libdir/libsa_edge.so.$version"
    "$libdir/pkgconfig/sa_edge.pc"
    "$incdir/sa/sa_edge.h"
    "$incdir/sa/sa_err.h"
    "$mandir/man1/sa-bridge.1"
    "$mandir/man1/sa-edge.1"
)
for f in "${expected[@]}"; do
    [[ -e $prefix/$f ]] || fail "not installed: $f"
done
for f in "$bindir/sa-bridge" "$bindir/sa-edge"; do
    [[ -x $prefix/$f ]] || fail "$f is not executable"
done
[[ $(readlink "$prefix/$libdir/libsa_edge.so") == "$soname" ]] ||
    fail "libsa_edge.so does not link to $soname"
[[ $(readlink "$prefix/$libdir/$soname") == "libsa_edge.so.$version" ]] ||
    fail "$soname does not link to libsa_edge.so.$version"
# Nothing else: no static archives, no test or bench programs, no extension.
(cd "$prefix" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort) >"$tmp/got"
printf '%s\n' "${expected[@]}" | sort >"$tmp/want"
diff -u "$tmp/want" "$tmp/got" >&2 || fail "the installed files differ from the expected list (above)"
[[ $("$prefix/$bindir/sa-bridge" --version) == "sa-bridge $version" ]] ||
    fail "the installed sa-bridge does not run"
[[ $("$prefix/$bindir/sa-edge" --version) == "sa-edge $version" ]] ||
    fail "the installed sa-edge does not run"
ok "cmake --install --prefix installs exactly the expected files, binaries run"

# The shared library carries libsa_storage itself and exports only the API.
dyn=$(readelf -d "$prefix/$libdir/libsa_edge.so.$version")
grep -q "SONAME.*\[$soname\]" <<<"$dyn" ||
    fail "libsa_edge's soname is not $soname"
if grep -q 'NEEDED.*sa_storage' <<<"$dyn"; then
    fail "libsa_edge.so needs a libsa_storage that is not installed"
fi
exported=$(nm -D --defined-only "$prefix/$libdir/libsa_edge.so.$version" | awk '{print $3}')
extra=$(grep -Ev '^(sa_edge_|sa_err_)' <<<"$exported" || true)
[[ -z $extra ]] || fail "libsa_edge.so exports internal symbols: $(echo $extra)"
for s in sa_edge_options_init sa_edge_open sa_edge_close sa_err_name sa_err_str; do
    grep -qx "$s" <<<"$exported" || fail "libsa_edge.so does not export $s"
done
ok "libsa_edge.so: soname $soname, self-contained, exports only sa_edge_* and sa_err_*"

pc=$prefix/$libdir/pkgconfig/sa_edge.pc
grep -qx "prefix=$prefix" "$pc" || fail "sa_edge.pc does not name the prefix $prefix: $(cat "$pc")"
export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
unset PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR
pkg-config --exists --print-errors sa_edge || fail "pkg-config does not find sa_edge"
[[ $(pkg-config --modversion sa_edge) == "$version" ]] || fail "sa_edge.pc version is not $version"
cflags=$(pkg-config --cflags sa_edge)
libs=$(pkg-config --libs sa_edge)
[[ $cflags == *"-I$prefix/$incdir"* ]] || fail "pkg-config --cflags sa_edge: '$cflags'"
[[ $libs == *"-L$prefix/$libdir"*"-lsa_edge"* ]] || fail "pkg-config --libs sa_edge: '$libs'"
ok "sa_edge.pc names the prefix; pkg-config finds it ($cflags $libs)"

# --- 2. a program built against the installed library ---------------------
cat >"$tmp/edge_hello.c" <<'EOF'
/* Opens a new edge store in argv[1], closes it, opens it again. */
#include <stdio.h>

#include <sa/sa_edge.h>

static int open_store(const char *dir, int create)
{
    sa_edge_options o;
    sa_edge_options_init(&o);
    o.create = create;
    o.peer = "install-test";
    o.bridge = "http://127.0.0.1:1";
    sa_err err = {0};
    sa_edge *e = NULL;
    int rc = sa_edge_open(dir, &o, &e, &err);
    if (rc != 0) {
        fprintf(stderr, "sa_edge_open(create=%d): %s: %s\n", create, sa_err_name(rc), err.msg);
        return 1;
    }
    sa_edge_status st;
    rc = sa_edge_status_get(e, &st, &err);
    sa_edge_close(e);
    if (rc != 0) {
        fprintf(stderr, "sa_edge_status_get: %s: %s\n", sa_err_name(rc), err.msg);
        return 1;
    }
    printf("peer=%s pending=%llu\n", st.peer, (unsigned long long)st.pending);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: edge_hello DIR\n");
        return 64;
    }
    return open_store(argv[1], 1) || open_store(argv[1], 0);
}
EOF
# shellcheck disable=SC2086  # word splitting of pkg-config's output is meant
cc -std=c11 -Wall -Wextra -Werror -o "$tmp/edge_hello" "$tmp/edge_hello.c" \
    $(pkg-config --cflags --libs sa_edge) || fail "could not build against the installed libsa_edge"
deps=$(LD_LIBRARY_PATH=$prefix/$libdir ldd "$tmp/edge_hello")
grep -q "libsa_edge.so.* => $prefix/$libdir/$soname" <<<"$deps" ||
    fail "edge_hello does not load the installed libsa_edge: $deps"
out=$(LD_LIBRARY_PATH=$prefix/$libdir "$tmp/edge_hello" "$tmp/store") || fail "edge_hello failed: $out"
[[ $out == $'peer=install-test pending=0\npeer=install-test pending=0' ]] ||
    fail "edge_hello printed '$out'"
# The store it made is a real one: the installed sa-edge reads it.
st=$("$prefix/$bindir/sa-edge" --data "$tmp/store" status --json) && grep -q '"install-test"' <<<"$st" ||
    fail "sa-edge status does not read the store edge_hello made"
ok "a program built with only pkg-config sa_edge creates, closes and reopens a store"

# --- 3. man pages -----------------------------------------------------------
for page in sa-bridge sa-edge; do
    f=$prefix/$mandir/man1/$page.1
    [[ -s $f ]] || fail "$page.1 is empty"
    warn=$(groff -man -Tutf8 -ww -z "$f" 2>&1) || fail "groff fails on $page.1: $warn"
    [[ -z $warn ]] || fail "groff warns on $page.1: $warn"
    text=$(groff -man -Tascii -P-cbou -rHY=0 "$f" 2>/dev/null)
    grep -q "^NAME" <<<"$text" || fail "$page.1 has no NAME section"
    grep -Eq "^ +$page +- " <<<"$text" || fail "$page.1: NAME is not '$page - ...'"
    grep -q "$page $version" <<<"$text" || fail "$page.1 does not name version $version"
    if command -v man >/dev/null; then
        MANWIDTH=80 man -l "$f" >/dev/null 2>"$tmp/man.err" || fail "man -l $page.1: $(cat "$tmp/man.err")"
    fi
done
# In step with --help: every option sa-bridge run --help describes, every
# command sa-edge --help lists (the troff source, with \- unescaped).
bsrc=$(sed 's/\\-/-/g' "$prefix/$mandir/man1/sa-bridge.1")
opts=$("$bin/bridge/sa-bridge" run --help | sed -n 's/^  \(--[a-z-]*\).*/\1/p')
[[ -n $opts ]] || fail "sa-bridge run --help lists no options"
for o in $opts; do
    grep -q -- "$o" <<<"$bsrc" || fail "sa-bridge.1 does not document run's $o"
done
for c in wal drop-slot; do
    grep -q "sa-bridge $c" <<<"$bsrc" || fail "sa-bridge.1 does not document the command $c"
done
esrc=$(sed 's/\\-/-/g' "$prefix/$mandir/man1/sa-edge.1")
cmds=$("$bin/edge/sa-edge" --help | awk '/^commands:$/{c=1;next} c&&/^$/{exit} c&&/^  [a-z]/{print $1}')
[[ -n $cmds ]] || fail "sa-edge --help lists no commands"
for c in $cmds; do
    grep -qw -- "$c" <<<"$esrc" || fail "sa-edge.1 does not document the command $c"
done
ok "man pages render without warnings and document every option and command of --help"

# --- 4. DESTDIR, and the extension component ---------------------------------
dest=$tmp/dest
DESTDIR=$dest cmake --install "$bin" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "DESTDIR=... cmake --install failed"; }
for f in "${expected[@]}"; do
    [[ -e $dest$conf_prefix/$f ]] || fail "not installed under DESTDIR: $conf_prefix/$f"
done
grep -qx "prefix=$conf_prefix" "$dest$conf_prefix/$libdir/pkgconfig/sa_edge.pc" ||
    fail "with DESTDIR, sa_edge.pc does not name the configured prefix $conf_prefix"
if grep -q "$dest" "$dest$conf_prefix/$libdir/pkgconfig/sa_edge.pc"; then
    fail "sa_edge.pc names the DESTDIR"
fi
if [[ -n $(find "$dest" -name 'softadastra*') ]]; then
    fail "a plain install installed extension files"
fi
ok "DESTDIR install: files under DESTDIR, sa_edge.pc names $conf_prefix, no extension"

if grep -q '^SA_BUILD_PGEXT:BOOL=ON' "$bin/CMakeCache.txt"; then
    pgdest=$tmp/pgdest
    DESTDIR=$pgdest cmake --install "$bin" --component pgext >"$tmp/install.log" 2>&1 ||
        { cat "$tmp/install.log" >&2; fail "cmake --install --component pgext failed"; }
    share=$pgdest$("$pg_config" --sharedir)/extension
    pkglib=$pgdest$("$pg_config" --pkglibdir)
    for f in "$share/softadastra.control" "$share/softadastra--0.1.sql" \
        "$share/softadastra--0.2.sql" "$share/softadastra--0.1--0.2.sql" "$pkglib/softadastra.so"; do
        [[ -s $f ]] || fail "the pgext component did not install ${f#"$pgdest"}"
    done
    dv=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$share/softadastra.control")
    [[ -s $share/softadastra--$dv.sql ]] || fail "no install script for default_version '$dv'"
    if [[ -n $(find "$pgdest" -name 'sa-*' -o -name 'libsa_edge*') ]]; then
        fail "the pgext component installed more than the extension"
    fi
    ok "cmake --install --component pgext installs the extension under DESTDIR"
else
    echo "ok - # SKIP the extension is not built (SA_BUILD_PGEXT=OFF)"
fi
echo "all ok"
