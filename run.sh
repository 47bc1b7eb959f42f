#!/usr/bin/env bash
# run.sh — the quick start: install what is missing, build, then either run
# the demo against a throwaway PostgreSQL or attach the bridge to a database.
#
#   ./run.sh                           the demo; runs until Ctrl-C
#   ./run.sh --check                   the demo, non-interactive: exit 0 only
#                                      if every flow was seen (./test.sh)
#   ./run.sh --pg CONNINFO [options]   sa-bridge run against that database,
#                                      in the foreground
#   ./run.sh --help
#
# Environment: SA_BUILD_DIR (build directory, default ./build),
# SA_RUN_DIR (the demo's state and logs, default ./.run),
# SA_DEMO_TIMEOUT (seconds each demo flow may take, default 60).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
top=$(pwd)

usage() {
    cat <<'EOF'
usage: ./run.sh                          demo: a throwaway PostgreSQL, sa-bridge and
                                         two sa-edge replicas; Ctrl-C stops it all
       ./run.sh --check                  the same demo, non-interactive: exits 0 only
                                         if every flow was seen, else names the one
                                         that failed
       ./run.sh --pg CONNINFO [OPTIONS]  run sa-bridge against that database in the
                                         foreground (OPTIONS: see sa-bridge run --help;
                                         --data defaults to ./.run/bridge)
       ./run.sh --help

Each first installs the Debian packages that are missing (apt-get, as root or
with sudo) and builds into ./build (SA_BUILD_DIR).  The demo keeps its data and
logs under ./.run (SA_RUN_DIR), needs the softadastra extension installed in
the local PostgreSQL 15 (it installs it, as root or with sudo, when it is
missing or outdated), and starts PostgreSQL as the postgres user when run as
root.  It shows three flows: a row written in SQL reaching both edges, an
offline edge's write reaching PostgreSQL, and a conflict recorded in
softadastra.conflicts.
EOF
}

mode=demo
case ${1:-} in
"") ;;
-h | --help) usage; exit 0 ;;
--check) mode=check; shift
    (($# == 0)) || { echo "run.sh: --check takes no arguments (see ./run.sh --help)" >&2; exit 64; } ;;
--pg | --pg=*) mode=pg ;;
*) echo "run.sh: unknown argument '$1' (see ./run.sh --help)" >&2; exit 64 ;;
esac

. "$top/scripts/deps.sh"
sa_install_deps
build=${SA_BUILD_DIR:-$top/build}
echo "== build ($build)"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=(sa-bridge sa-edge)
[[ $mode == pg ]] || targets+=(pgext)
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" >"$build/run-sh-build.log" 2>&1 ||
    { tail -40 "$build/run-sh-build.log" >&2; echo "run.sh: the build failed (log: $build/run-sh-build.log)" >&2; exit 1; }

if [[ $mode == pg ]]; then
    # ./run.sh --pg CONNINFO [bridge options]: the bridge in the foreground.
    if [[ $1 == --pg=* ]]; then conninfo=${1#--pg=}; shift
    else
        (($# >= 2)) || { echo "run.sh: --pg needs a connection string (see ./run.sh --help)" >&2; exit 64; }
        conninfo=$2; shift 2
    fi
    rest=("$@") have_data=0
    for a in "${rest[@]}"; do
        case $a in --data | --data=* | --config | --config=*) have_data=1 ;; esac
    done
    if ((have_data == 0)); then
        mkdir -p "${SA_RUN_DIR:-$top/.run}"
        rest=(--data "${SA_RUN_DIR:-$top/.run}/bridge" "${rest[@]}")
    fi
    # Never echo a password: show the connection string with it masked.
    shown=$(sed -E -e "s/(password[[:space:]]*=[[:space:]]*)('([^'\\\\]|\\\\.)*'|[^[:space:]]*)/\1***/g" \
                   -e 's#^(postgres(ql)?://[^:/@]*):[^@/]*@#\1:***@#' <<<"$conninfo")
    echo "== sa-bridge run --pg '$shown' ${rest[*]}"
    exec "$build/bridge/sa-bridge" run --pg "$conninfo" "${rest[@]}"
fi

args=()
[[ $mode == check ]] && args+=(--check)
exec bash "$top/scripts/demo.sh" "${args[@]}" "$build"
