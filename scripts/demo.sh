#!/usr/bin/env bash
# scripts/demo.sh — the quick start's demo, run by ./run.sh (see ./run.sh --help).
#
#   demo.sh [--check] BUILD_DIR
#
# Starts a throwaway PostgreSQL (tests/harness/pgh.sh; as the postgres user
# when root), installs the softadastra extension into the system PostgreSQL
# if it is missing or outdated, creates public.items and the peers edge-a and
# edge-b, starts sa-bridge and an `sa-edge sync --follow` per edge, then shows
# and checks three flows:
#   sql-to-edges   a row inserted in SQL reaches both edges
#   offline-write  edge-b writes while offline; the row reaches PostgreSQL
#                  (and edge-a) once edge-b syncs again
#   conflict       edge-b (offline) and SQL change the same row; the conflict
#                  is a row of softadastra.conflicts, `sa-edge conflicts`
#                  lists it and every replica converges
# Without --check it then runs until SIGINT/SIGTERM; with --check it stops at
# once, exit 0 only if every flow was seen.  Either way everything it started
# is stopped on exit; a watcher process does it if this script is killed.
#
# Layout: $SA_RUN_DIR (default <repo>/.run) holds one directory per run,
# <stamp>-<pid>/, with the cluster, bridge/, edge-a/, edge-b/ and logs/; on
# exit everything but logs/ is removed, and only the last 5 runs' logs are
# kept.  logs/pids lists each process started ("name pid"), for tests.
set -uo pipefail

top=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
pgh=$top/tests/harness/pgh.sh

# The watcher: `demo.sh _watch DIR PID`, in a session of its own, waits for
# the demo (PID) to end; if it ended without cleaning up (SIGKILL), it stops
# what the demo started.
if [[ ${1:-} == _watch ]]; then
    run=$2
    trap '' INT TERM HUP
    while kill -0 "$3" 2>/dev/null && [[ -e $run/.live ]]; do sleep 1; done
    [[ -e $run/.live ]] || exit 0   # it cleaned up itself
    while read -r name pid; do
        [[ $name == postgres ]] && continue
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$run/"; then
            kill -KILL "$pid" 2>/dev/null
        fi
    done <"$run/logs/pids"
    for d in "$run"/sa_pgh.*; do [[ -e $d/.sa_pgh ]] && bash "$pgh" stop "$d"; done
    [[ -f $run/pgdir ]] && d=$(cat "$run/pgdir") && [[ -e $d/.sa_pgh ]] && bash "$pgh" stop "$d"
    find "$run" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
    exit 0
fi

check=0
if [[ ${1:-} == --check ]]; then check=1; shift; fi
build=${1:?usage: demo.sh [--check] BUILD_DIR}
bridge_bin=$build/bridge/sa-bridge
edge_bin=$build/edge/sa-edge
timeout_s=${SA_DEMO_TIMEOUT:-60}
runs=${SA_RUN_DIR:-$top/.run}

mkdir -p "$runs"
runs=$(cd "$runs" && pwd)
run=$runs/$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$run/logs"
touch "$run/.live"
: >"$run/logs/pids"
ln -sfn "$(basename "$run")" "$runs/latest"
logs=$run/logs
rel() { local p=$1; [[ $p == "$top"/* ]] && p=.${p#"$top"}; printf '%s' "$p"; }

# ---------------------------------------------------------------- output
# This script's messages go to $errfd (the caller's stderr); its own stderr
# goes to logs/demo.log, so that stray tool output and bash's own warnings
# (bash 5.2 sometimes prints "wait_for: No record of process N" when a child
# ends while another is reaped) do not garble the narration.
exec {errfd}>&2 2>>"$logs/demo.log"
say() { printf '%s\n' "$*"; }
ok() { printf '\xe2\x9c\x93 %s\n' "$*"; }
failed_flow=""
die() { # flow message: a flow (or the setup) failed
    failed_flow=$1
    printf '\xe2\x9c\x97 %s: %s\n' "$1" "$2" >&$errfd
    printf '  logs: %s\n' "$(rel "$logs")" >&$errfd
    exit 1
}
# nap SECONDS: sleep without forking (a read that times out on a FIFO nobody
# writes), so polling loops start no child that could race a follower's end.
mkfifo "$run/.nap"
exec {napfd}<>"$run/.nap"
stop_requested=0
nap() {
    ((stop_requested == 0)) || exit "$stop_requested"
    read -r -t "$1" -u "$napfd" _
    ((stop_requested == 0)) || exit "$stop_requested"
}
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

# wait_for SECONDS CMD...: run CMD until it succeeds; false after SECONDS.
wait_for() {
    local limit=$1 t0
    shift
    t0=$SECONDS
    until "$@"; do
        ((SECONDS - t0 < limit)) || return 1
        nap 0.1
    done
}

# ---------------------------------------------------------------- cleanup
pgdir="" bridge_pid=""
declare -A follower_pid=()
cleaned=0
stop_pid() { # pid seconds: TERM, wait, then KILL
    local pid=$1 limit=$2 t0=$SECONDS
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS - t0 >= limit)); then kill -KILL "$pid" 2>/dev/null; break; fi
        nap 0.1
    done
    wait "$pid" 2>/dev/null
    return 0
}
cleanup() {
    local rc=$?
    # Only this script cleans up, never a subshell that runs the trap.
    [[ $BASHPID == "$$" ]] || exit "$rc"
    ((cleaned)) && return
    cleaned=1
    trap '' INT TERM HUP
    stop_requested=0
    ((check)) || [[ -z ${announced:-} ]] || say "== stopping: edges, sa-bridge, PostgreSQL"
    local n
    for n in "${!follower_pid[@]}"; do stop_pid "${follower_pid[$n]}" 15; done
    [[ -z $bridge_pid ]] || stop_pid "$bridge_pid" 60
    if [[ -n $pgdir && -e $pgdir/.sa_pgh ]]; then
        cp "$pgdir/postgres.log" "$logs/postgres.log" 2>/dev/null
        bash "$pgh" stop "$pgdir" || say "run.sh: could not remove $pgdir" >&$errfd
    fi
    find "$run" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
    # keep the logs of the last 5 runs
    ls -1d "$runs"/[0-9]*-[0-9]* 2>/dev/null | sort | head -n -5 |
        while read -r d; do [[ -e $d/.live ]] || rm -rf "$d"; done
    if ((check)); then
        if ((rc == 0)); then say "== check passed: every flow was seen (logs: $(rel "$logs"))"
        else say "== check FAILED${failed_flow:+ in flow $failed_flow} (logs: $(rel "$logs"))" >&$errfd; fi
    elif [[ -n ${announced:-} ]]; then
        say "== stopped; logs kept in $(rel "$logs")"
    fi
    exit "$rc"
}
# A signal only sets stop_requested; nap (every wait polls) then exits.
# Exiting from the trap itself would run the cleanup with SIGCHLD blocked
# (bash's signal context), where stopping children takes until each timeout.
trap cleanup EXIT
trap 'stop_requested=130' INT
trap 'stop_requested=143' TERM
trap 'stop_requested=129' HUP

# The watcher (see the top of this file) cleans up if this script is killed.
setsid bash "$top/scripts/demo.sh" _watch "$run" "$$" >/dev/null 2>&1 </dev/null {errfd}>&- {napfd}>&- &

# Start a long-running program in its own session (so a Ctrl-C reaches only
# this script, which stops it exactly once), recording its pid.
started_pid=""
start_bg() { # name logfile cmd...
    local name=$1 log=$2
    shift 2
    setsid "$@" >>"$log" 2>&1 </dev/null {errfd}>&- {napfd}>&- &
    started_pid=$!
    echo "$name $started_pid" >>"$logs/pids"
}

psql_q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

# ---------------------------------------------------------------- PostgreSQL
say "== Softadastra quick start$( ((check)) && echo ' (--check)')"
[[ -x $bridge_bin && -x $edge_bin ]] || die setup "no sa-bridge / sa-edge in $build"

pgconfig=$(command -v /usr/lib/postgresql/15/bin/pg_config pg_config 2>/dev/null | head -1)
[[ -n $pgconfig ]] || die setup "no pg_config: is postgresql-server-dev-15 installed?"

# The extension's files are the system server's: install them only when the
# built ones differ (the .so compared without debug info and build id, which
# hold the build directory's path).
ext_current() {
    local share lib f
    share=$("$pgconfig" --sharedir)/extension
    lib=$("$pgconfig" --pkglibdir)
    cmp -s "$top/pgext/softadastra.control" "$share/softadastra.control" || return 1
    for f in "$top/pgext"/softadastra--*.sql "$build/pgext"/softadastra--*.sql; do
        cmp -s "$f" "$share/$(basename "$f")" || return 1
    done
    [[ -f $lib/softadastra.so ]] || return 1
    local a b same=1
    a=$(mktemp) b=$(mktemp)
    objcopy --strip-debug --remove-section=.note.gnu.build-id "$build/pgext/softadastra.so" "$a" 2>/dev/null &&
        objcopy --strip-debug --remove-section=.note.gnu.build-id "$lib/softadastra.so" "$b" 2>/dev/null &&
        cmp -s "$a" "$b" || same=0
    rm -f "$a" "$b"
    ((same))
}
if ! ext_current; then
    make_install=(make -C "$build/pgext" -f "$top/pgext/Makefile" VPATH="$top/pgext"
                  PG_CONFIG="$pgconfig" install)
    say "== installing the softadastra extension into $("$pgconfig" --sharedir) (missing or outdated)"
    if [[ $(id -u) -eq 0 ]]; then
        "${make_install[@]}" >"$logs/pgext-install.log" 2>&1
    elif sudo -n true 2>/dev/null || { ((check == 0)) && [[ -t 0 ]]; }; then
        sudo "${make_install[@]}" >"$logs/pgext-install.log" 2>&1
    else
        false
    fi || die setup "installing the extension needs root: run as root, or
    sudo cmake --build $(rel "$build") --target pgext_install
  then ./run.sh again (install log: $(rel "$logs")/pgext-install.log)"
fi

# PostgreSQL in a session of its own: a Ctrl-C meant for this script must not
# reach the postmaster (SIGINT is its fast shutdown) before the bridge stops.
pgexports=$(SA_TEST_TMPDIR=$run setsid -w bash "$pgh" start 2>"$logs/pgh.log" {errfd}>&- {napfd}>&-) ||
    die setup "PostgreSQL did not start: $(tail -c 300 "$logs/pgh.log")"
eval "$pgexports"
pgdir=$SA_PGH_DIR
echo "$pgdir" >"$run/pgdir"
echo "postgres $(head -n1 "$pgdir/data/postmaster.pid")" >>"$logs/pids"
export PGHOST PGPORT PGUSER PGDATABASE

psql_q >"$logs/setup.log" 2>&1 <<'SQL' || die setup "creating the demo schema failed: $(tail -3 "$logs/setup.log")"
CREATE EXTENSION softadastra;
CREATE TABLE public.items (id int PRIMARY KEY, name text, price numeric(10,2));
SELECT softadastra.add_table('public.items');
SQL
token_a=$(psql_q -c "SELECT softadastra.create_peer('edge-a')" 2>>"$logs/setup.log") &&
    token_b=$(psql_q -c "SELECT softadastra.create_peer('edge-b')" 2>>"$logs/setup.log") ||
    die setup "creating the peers failed: $(tail -3 "$logs/setup.log")"
say "   PostgreSQL 15: throwaway cluster in $(rel "$pgdir") (port $PGPORT), extension softadastra,"
say "   table public.items (conflict strategy lww), peers edge-a and edge-b"

# ---------------------------------------------------------------- bridge
start_bg sa-bridge "$logs/bridge.log" "$bridge_bin" run --data "$run/bridge" \
    --listen 127.0.0.1:0 --no-progress
bridge_pid=$started_pid
bridge_ready() {
    kill -0 "$bridge_pid" 2>/dev/null || die setup "sa-bridge exited: $(tail -3 "$logs/bridge.log")"
    grep -q 'streaming from slot' "$logs/bridge.log" 2>/dev/null
}
wait_for "$timeout_s" bridge_ready || die setup "sa-bridge did not start streaming within ${timeout_s}s"
port=$(sed -n 's/.*HTTP API v1 listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$logs/bridge.log" | head -1)
[[ -n $port ]] || die setup "sa-bridge did not say which port it listens on"
url=http://127.0.0.1:$port
say "   sa-bridge: $url (data $(rel "$run/bridge"))"

# /metrics without curl: bash's /dev/tcp.
metrics() {
    local m
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    m=$(cat <&3)
    exec 3<&-
    printf '%s\n' "$m" | tr -d '\r'
}
# metric NAME_REGEX [PEER]: the value of the first sample whose name matches
# (the per-peer names were softadastra_edge_* before they became _peer_*).
metric() {
    metrics | awk -v re="^($1)\$" -v peer="${2:-}" '
        { name = $1; lbl = ""
          if ((i = index(name, "{")) > 0) { lbl = substr(name, i); name = substr(name, 1, i - 1) } }
        name ~ re && (peer == "" || index(lbl, "peer=\"" peer "\"") > 0) { print $2; exit }'
}
wal_head() { local h; h=$(metric softadastra_wal_head_seq); echo "${h:-0}"; }
acked() { local a; a=$(metric 'softadastra_(peer|edge)_acked_seq' "$1"); echo "${a:-0}"; }
contacted() { [[ -n $(metric 'softadastra_(peer_last_contact|edge_last_seen)_seconds' "$1") ]]; }

# ---------------------------------------------------------------- edges
edge() { local n=$1; shift; "$edge_bin" --data "$run/$n" "$@"; }
follow() { # name: start its follower
    start_bg "$1" "$logs/$1.log" "$edge_bin" --data "$run/$1" sync --follow
    follower_pid[$1]=$started_pid
}
unfollow() { # name: stop its follower (the edge is offline until follow)
    stop_pid "${follower_pid[$1]}" 15
    unset "follower_pid[$1]"
}
edge edge-a --bridge "$url" --token "$token_a" init --peer edge-a >"$logs/setup.log" 2>&1 &&
    edge edge-b --bridge "$url" --token "$token_b" init --peer edge-b >>"$logs/setup.log" 2>&1 ||
    die setup "sa-edge init failed: $(tail -3 "$logs/setup.log")"
follow edge-a
follow edge-b
wait_for "$timeout_s" eval 'contacted edge-a && contacted edge-b' ||
    die setup "the edges did not reach the bridge within ${timeout_s}s (logs: edge-a.log, edge-b.log)"
say "   sa-edge replicas edge-a, edge-b: following (data $(rel "$run")/edge-a, edge-b)"
announced=1
say ""

# ---------------------------------------------------------------- flow 1
# sql-to-edges: an INSERT reaches both edges (each has acknowledged the WAL
# position that holds it, which it does once the row is durable there).
h0=$(wal_head)
t0=$(now)
psql_q -c "INSERT INTO public.items VALUES (1, 'espresso', 2.10)" ||
    die sql-to-edges "the INSERT failed"
both_acked() {
    local h
    h=$(wal_head)
    ((h > h0)) && (($(acked edge-a) >= h && $(acked edge-b) >= h))
}
wait_for "$timeout_s" both_acked ||
    die sql-to-edges "the INSERT did not reach both edges within ${timeout_s}s (WAL head $(wal_head), edge-a acked $(acked edge-a), edge-b acked $(acked edge-b))"
ok "SQL insert of item 1 reached edge-a and edge-b ($(since "$t0"))"
say "    psql> INSERT INTO public.items VALUES (1, 'espresso', 2.10)"

# ---------------------------------------------------------------- flow 2
# offline-write: edge-b's follower stops; it writes locally, comes back.
unfollow edge-b
row=$(edge edge-b get items '{"id": 1}' 2>&1) ||
    die offline-write "edge-b does not have item 1: $row"
say "    edge-b$ sa-edge get items '{\"id\": 1}'   →   $(sed -n 's/.*"cols":\({[^}]*}\).*/\1/p' <<<"$row")"
out=$(edge edge-b put items '{"id": 2, "name": "croissant", "price": "1.80"}' 2>&1) ||
    die offline-write "sa-edge put on edge-b failed: $out"
[[ -z $(psql_q -c "SELECT 1 FROM public.items WHERE id = 2") ]] ||
    die offline-write "item 2 is in PostgreSQL before edge-b synced"
h0=$(wal_head)
t0=$(now)
follow edge-b
in_pg() { [[ $(psql_q -c "SELECT name || ' ' || price FROM public.items WHERE id = 2" 2>/dev/null) == "croissant 1.80" ]]; }
wait_for "$timeout_s" in_pg ||
    die offline-write "edge-b's offline write of item 2 did not reach PostgreSQL within ${timeout_s}s (see edge-b.log, bridge.log)"
t_pg=$(since "$t0")
a_has() { local h; h=$(wal_head); ((h > h0)) && (($(acked edge-a) >= h)); }
wait_for "$timeout_s" a_has ||
    die offline-write "edge-b's write of item 2 reached PostgreSQL but not edge-a within ${timeout_s}s"
ok "edge-b's offline write of item 2 reached PostgreSQL ($t_pg after edge-b came back online) and edge-a ($(since "$t0"))"
say "    edge-b$ sa-edge put items '{\"id\": 2, \"name\": \"croissant\", \"price\": \"1.80\"}'   (while offline)"

# ---------------------------------------------------------------- flow 3
# conflict: edge-b, offline, changes item 1's price; SQL changes it after
# (so under lww SQL's later write wins); edge-b syncs.
unfollow edge-b
out=$(edge edge-b put items '{"id": 1, "name": "espresso", "price": "2.50"}' 2>&1) ||
    die conflict "sa-edge put on edge-b failed: $out"
nap 0.05
psql_q -c "UPDATE public.items SET price = 2.30 WHERE id = 1" || die conflict "the UPDATE failed"
t0=$(now)
follow edge-b
has_conflict() { [[ -n $(psql_q -c "SELECT id FROM softadastra.conflicts WHERE origin = 'edge-b'" 2>/dev/null) ]]; }
wait_for "$timeout_s" has_conflict ||
    die conflict "no softadastra.conflicts row for edge-b's write within ${timeout_s}s"
ok "edge-b (offline) and SQL both changed item 1's price: the conflict is a row of softadastra.conflicts ($(since "$t0"))"
say "    edge-b: price 2.50 while offline; then psql> UPDATE public.items SET price = 2.30 WHERE id = 1"
psql -X -v ON_ERROR_STOP=1 -c "SELECT id, kind, origin, key, columns, base, local, remote, strategy, resolution
    FROM softadastra.conflicts" 2>&1 | sed 's/^/    /'
# The edge hears its op's outcome and converges with everyone.
unfollow edge-b
edge_sees() { # conflicts listed and item 1 at SQL's price (else sync once more)
    local c g
    c=$(edge edge-b conflicts 2>/dev/null) && g=$(edge edge-b get items '{"id": 1}' 2>/dev/null)
    if [[ -n $c && $g == *'"price":"2.30"'* ]]; then return 0; fi
    edge edge-b sync >/dev/null 2>&1
    return 1
}
wait_for "$timeout_s" edge_sees ||
    die conflict "sa-edge conflicts on edge-b did not list the conflict, or edge-b did not converge, within ${timeout_s}s"
say "    edge-b$ sa-edge conflicts"
"$edge_bin" --data "$run/edge-b" conflicts 2>&1 | sed 's/^/    /'
pg_price=$(psql_q -c "SELECT price FROM public.items WHERE id = 1")
unfollow edge-a
a_price=$(edge edge-a get items '{"id": 1}' 2>&1 | sed -n 's/.*"price":"\([^"]*\)".*/\1/p')
b_price=$(edge edge-b get items '{"id": 1}' 2>&1 | sed -n 's/.*"price":"\([^"]*\)".*/\1/p')
[[ $pg_price == 2.30 && $a_price == 2.30 && $b_price == 2.30 ]] ||
    die conflict "the replicas disagree on item 1's price: PostgreSQL $pg_price, edge-a ${a_price:-none}, edge-b ${b_price:-none}"
ok "every replica converged on item 1's price 2.30 (lww: the later SQL write won): PostgreSQL, edge-a, edge-b"
follow edge-a
follow edge-b

say ""
if ((check)); then exit 0; fi

# ---------------------------------------------------------------- run on
say "== running until Ctrl-C, which stops everything.  Meanwhile, from another shell:"
say "    PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=postgres psql -c \"INSERT INTO items VALUES (3, 'tea', 1.20)\""
say "    curl -s $url/metrics | grep acked_seq      # each edge's acknowledged WAL position"
say "  logs: $(rel "$logs")/ (bridge.log, edge-a.log, edge-b.log; postgres.log at exit)"
while :; do
    kill -0 "$bridge_pid" 2>/dev/null || { say "run.sh: sa-bridge exited: $(tail -3 "$logs/bridge.log")" >&$errfd; exit 1; }
    nap 1
done
