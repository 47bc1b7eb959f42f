#!/usr/bin/env bash
# pgh.sh — shell front end of the PostgreSQL test harness (see pg_harness.h
# for the C side; both build the same kind of throwaway cluster).
#
#   pgh.sh run -- CMD ARGS...   start a cluster, export PGHOST PGPORT PGUSER
#                               PGDATABASE SA_PG_CONNINFO SA_PGH_DIR, run CMD,
#                               stop and remove the cluster, exit with CMD's
#                               status.  Cleanup also happens on INT/TERM/HUP,
#                               and a watcher process cleans up if this script
#                               is SIGKILLed.
#   pgh.sh start                start a cluster and print `export ...` lines
#                               for eval; the caller owns it and must stop it.
#   pgh.sh stop DIR             stop the cluster in DIR (SA_PGH_DIR) and
#                               remove DIR (only harness-made dirs).
#
# Environment: SA_TEST_TMPDIR (parent of the temp dir; default /tmp),
# PG_BINDIR (else `pg_config --bindir`, else /usr/lib/postgresql/15/bin).
# As root, initdb and the server run as the `postgres` user.
set -euo pipefail

self=$(readlink -f "$0")

die() {
    echo "pgh.sh: $*" >&2
    exit 1
}

bindir=${PG_BINDIR:-}
if [[ -z $bindir ]]; then
    bindir=$(pg_config --bindir 2>/dev/null || true)
fi
if [[ -z $bindir || ! -x $bindir/pg_ctl ]]; then
    bindir=/usr/lib/postgresql/15/bin
fi
[[ -x $bindir/pg_ctl ]] || die "no pg_ctl in $bindir (set PG_BINDIR)"

# Run a command as the server user (PostgreSQL refuses root).  fd 9 (the
# watcher's pipe, see cmd_run) is closed so no server process holds it.
as_pg() {
    if [[ $(id -u) -ne 0 ]]; then
        "$@" 9>&-
    elif command -v runuser >/dev/null; then
        runuser -u postgres -- "$@" 9>&-
    else
        su -s /bin/sh postgres -c "$(printf '%q ' "$@")" 9>&-
    fi
}

# Write a file the server user can read.
put_file() { # path text [append]
    if [[ ${3:-} == append ]]; then printf '%s' "$2" >>"$1"; else printf '%s' "$2" >"$1"; fi
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$1"; fi
}

tail_of() { tail -c 400 "$1" 2>/dev/null | tr '\n' ' '; }

# Stop the server in DIR (mode fast|immediate) and remove DIR.
stop_dir() { # dir mode
    local dir=$1 mode=${2:-fast} pid
    [[ -e $dir/.sa_pgh ]] || return 0 # gone already, or not ours
    if [[ -f $dir/data/postmaster.pid ]]; then
        pid=$(head -n1 "$dir/data/postmaster.pid" 2>/dev/null || true)
        as_pg "$bindir/pg_ctl" stop -D "$dir/data" -m "$mode" -w -t 60 -s \
            >>"$dir/cmd.log" 2>&1 ||
            if [[ -n $pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    if [[ -f $dir/sockdir ]]; then
        local sock
        sock=$(cat "$dir/sockdir")
        [[ $sock == /tmp/sa_pghs.* ]] && rm -rf "$sock"
    fi
    rm -rf "$dir"
}

# Create and start a cluster; sets PGH_DIR PGH_SOCK PGH_PORT.
start_cluster() {
    local parent=${SA_TEST_TMPDIR:-/tmp}
    mkdir -p "$parent"
    PGH_DIR=$(mktemp -d "$parent/sa_pgh.XXXXXX")
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres: "$PGH_DIR"
        # A repo under /root is not reachable by postgres: use /tmp then.
        if ! as_pg test -w "$PGH_DIR" -a -x "$PGH_DIR"; then
            rmdir "$PGH_DIR"
            PGH_DIR=$(mktemp -d /tmp/sa_pgh.XXXXXX)
            chown postgres: "$PGH_DIR"
        fi
    fi
    put_file "$PGH_DIR/.sa_pgh" ""
    # sun_path is 108 bytes: long dirs get a short socket dir of their own.
    PGH_SOCK=$PGH_DIR
    if ((${#PGH_DIR} + 21 > 100)); then
        PGH_SOCK=$(mktemp -d /tmp/sa_pghs.XXXXXX)
        [[ $(id -u) -ne 0 ]] || chown postgres: "$PGH_SOCK"
        put_file "$PGH_DIR/sockdir" "$PGH_SOCK"
    fi
    local data=$PGH_DIR/data log=$PGH_DIR/postgres.log
    as_pg "$bindir/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C \
        --no-sync --no-instructions >>"$PGH_DIR/cmd.log" 2>&1 ||
        { local t; t=$(tail_of "$PGH_DIR/cmd.log"); stop_dir "$PGH_DIR"; die "initdb failed: $t"; }
    put_file "$data/pg_hba.conf" "local all all trust
local replication all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"
    put_file "$data/postgresql.conf" $'\n'"include 'sa_pgh.conf'"$'\n' append
    local plugins=""
    if as_pg "$bindir/postgres" --describe-config 2>/dev/null | grep -q '^output_plugin_libraries'; then
        plugins="output_plugin_libraries = 'pgoutput, test_decoding'"
    fi
    local attempt pos
    for attempt in 1 2 3 4 5 6 7 8; do
        PGH_PORT=$((20000 + RANDOM % 40000))
        put_file "$data/sa_pgh.conf" "# written by pgh.sh
listen_addresses = '127.0.0.1'
port = $PGH_PORT
unix_socket_directories = '$PGH_SOCK'
wal_level = logical
max_replication_slots = 32
max_wal_senders = 32
fsync = off
full_page_writes = off
logical_decoding_work_mem = '64kB'
track_commit_timestamp = on
$plugins
"
        pos=$(($(stat -c %s "$log" 2>/dev/null || echo 0) + 1))
        if as_pg "$bindir/pg_ctl" start -D "$data" -l "$log" -w -t 60 -s \
            >>"$PGH_DIR/cmd.log" 2>&1; then
            return 0
        fi
        # A random port may be taken: try another; anything else is fatal.
        if ! tail -c +"$pos" "$log" 2>/dev/null | grep -qE 'could not bind|Address already in use'; then
            break
        fi
    done
    local t
    t=$(tail_of "$log")
    stop_dir "$PGH_DIR" immediate
    die "server did not start: $t"
}

export_lines() {
    printf 'export PGHOST=%q PGPORT=%q PGUSER=postgres PGDATABASE=postgres\n' "$PGH_SOCK" "$PGH_PORT"
    printf 'export SA_PG_CONNINFO=%q\n' "host=$PGH_SOCK port=$PGH_PORT user=postgres dbname=postgres"
    printf 'export SA_PGH_DIR=%q\n' "$PGH_DIR"
}

cmd_run() {
    [[ ${1:-} == -- ]] && shift
    (($# > 0)) || die "usage: pgh.sh run -- CMD ARGS..."
    PGH_DIR=""
    trap '[[ -z $PGH_DIR ]] || stop_dir "$PGH_DIR"; exec 9>&- 2>/dev/null || true' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    start_cluster
    # The watcher: a process in its own session reading a pipe whose only
    # write end is our fd 9 (closed for every child).  EOF means we are gone,
    # however we died (even SIGKILL): it then stops and removes the cluster.
    exec 9> >(exec setsid -f bash "$self" _watch "$PGH_DIR" >/dev/null 2>&1)
    eval "$(export_lines)"
    local status=0
    "$@" 9>&- || status=$?
    exit "$status"
}

cmd_watch() { # internal: stdin is the watcher pipe
    trap '' INT TERM HUP
    cat >/dev/null || true
    stop_dir "$1" immediate
}

case ${1:-} in
run) shift; cmd_run "$@" ;;
start)
    start_cluster
    export_lines
    ;;
stop)
    [[ -n ${2:-} ]] || die "usage: pgh.sh stop DIR"
    [[ -e $2/.sa_pgh ]] || die "$2 is not a harness cluster directory"
    stop_dir "$2"
    ;;
_watch) cmd_watch "$2" ;;
*) die "usage: pgh.sh run -- CMD ARGS... | start | stop DIR" ;;
esac
