#!/usr/bin/env bash
# test_run_sh.sh — the quick start, ./run.sh:
#   1. --help and a bad argument (exit 64);
#   2. --check runs the demo and exits 0, with a line for every flow
#      (SQL to both edges, an offline edge write, a conflict and convergence),
#      and leaves nothing running or on disk but its logs;
#   3. without arguments it narrates the same, runs until SIGINT (sent to its
#      process group, as Ctrl-C does), then stops everything it started;
#   4. killed with SIGKILL, its watcher stops everything it started;
#   5. --pg CONNINFO never echoes the password.
# run.sh builds into $SA_BINARY_DIR (ctest's RESOURCE_LOCK build_tree keeps
# other cmake runs on it away) and keeps its state under a temporary
# SA_RUN_DIR.
set -u
top=${SA_SOURCE_DIR:?}
export SA_BUILD_DIR=${SA_BINARY_DIR:?}
tmp=$(mktemp -d "${SA_TEST_TMPDIR:-/tmp}/run_sh_test.XXXXXX")
export SA_RUN_DIR=$tmp/run
log=$tmp/out
bg=""
cleanup() {
    [[ -z $bg ]] || kill -TERM -- "-$bg" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [[ -f $log ]] && tail -40 "$log"; exit 1; }
ok() { echo "ok - $* ($((SECONDS - t_ok)) s)"; t_ok=$SECONDS; }
t_ok=$SECONDS
set -m # background jobs in their own process group, SIGINT not ignored

# Every process a run started (logs/pids) is gone, and nothing runs from
# its directory; only logs/ is left of it.
all_stopped() { # what
    local run=$SA_RUN_DIR/latest pids live="" p t0=$SECONDS
    [[ -f $run/logs/pids ]] || fail "$1: no $run/logs/pids"
    pids=$(awk '{ print $2 }' "$run/logs/pids")
    for p in sa-bridge edge-a edge-b postgres; do
        grep -q "^$p " "$run/logs/pids" || fail "$1: $p is not in logs/pids"
    done
    while :; do
        live=""
        for p in $pids; do kill -0 "$p" 2>/dev/null && live+=" $p"; done
        real=$(readlink -f "$run")
        for p in /proc/[0-9]*; do
            { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "$real/" && live+=" ${p#/proc/}"
        done
        [[ -z $live ]] && break
        ((SECONDS - t0 < 30)) || fail "$1: still running:$(for p in $live; do echo; tr '\0' ' ' <"/proc/$p/cmdline"; done)"
        sleep 0.2
    done
    [[ $(ls -A "$run") == logs ]] || fail "$1: left in $run: $(ls -A "$run" | tr '\n' ' ')"
}
flows_seen() { # what
    grep -q "^✓ SQL insert of item 1 reached edge-a and edge-b" "$log" || fail "$1: flow sql-to-edges not narrated"
    grep -q "^✓ edge-b's offline write of item 2 reached PostgreSQL" "$log" || fail "$1: flow offline-write not narrated"
    grep -q "^✓ edge-b (offline) and SQL both changed item 1's price: the conflict is a row of softadastra.conflicts" "$log" ||
        fail "$1: flow conflict not narrated"
    grep -Eq "update_differ \| edge-b .* kept_local" "$log" || fail "$1: the softadastra.conflicts row is not shown"
    grep -q "conflict  update public.items" "$log" || fail "$1: sa-edge conflicts did not list the conflict"
    grep -q "^✓ every replica converged on item 1's price 2.30" "$log" || fail "$1: convergence not narrated"
}
wait_line() { # pattern seconds: until the background run.sh prints it
    local t0=$SECONDS
    until grep -q "$1" "$log"; do
        kill -0 "$bg" 2>/dev/null || fail "run.sh ended before printing '$1'"
        ((SECONDS - t0 < $2)) || fail "run.sh did not print '$1' within $2 s"
        sleep 0.2
    done
}

# 1. usage
"$top/run.sh" --help >"$log" 2>&1 || fail "--help exited $?"
grep -q -- "--check" "$log" && grep -q -- "--pg CONNINFO" "$log" || fail "--help does not describe --check and --pg"
"$top/run.sh" --frobnicate >"$log" 2>&1
rc=$?
[[ $rc == 64 ]] || fail "an unknown argument exited $rc, want 64"
grep -q "unknown argument '--frobnicate'" "$log" || fail "an unknown argument is not named"
ok "--help, and an unknown argument exits 64"

# 2. --check
"$top/run.sh" --check >"$log" 2>&1
rc=$?
[[ $rc == 0 ]] || fail "run.sh --check exited $rc"
flows_seen "--check"
grep -q "== check passed: every flow was seen" "$log" || fail "--check did not say it passed"
all_stopped "--check"
ok "run.sh --check: every flow seen, exit 0, nothing left running"

# 3. no arguments: runs until Ctrl-C
"$top/run.sh" >"$log" 2>&1 &
bg=$!
wait_line "== running until Ctrl-C" 240
flows_seen "no arguments"
sleep 1
kill -0 "$bg" 2>/dev/null || fail "run.sh did not keep running after the demo"
kill -INT -- "-$bg"
wait "$bg"
rc=$?
bg=""
[[ $rc == 130 ]] || fail "run.sh exited $rc after SIGINT, want 130"
grep -q "== stopped; logs kept in" "$log" || fail "run.sh did not say it stopped"
grep -q 'msg="stopped cleanly"\|stopped cleanly' "$SA_RUN_DIR/latest/logs/bridge.log" ||
    fail "sa-bridge did not stop cleanly: $(tail -3 "$SA_RUN_DIR/latest/logs/bridge.log")"
all_stopped "SIGINT"
ok "run.sh without arguments narrates the flows, runs until SIGINT, then stops all it started"

# 4. SIGKILL: the watcher cleans up
"$top/run.sh" >"$log" 2>&1 &
bg=$!
wait_line "== running until Ctrl-C" 240
kill -KILL "$bg"
wait "$bg" 2>/dev/null
bg=""
all_stopped "SIGKILL"
ok "run.sh killed with SIGKILL: its watcher stops all it started"

# 5. --pg: the bridge in the foreground; the password is never echoed
for conn in "host=127.0.0.1 port=1 dbname=x password=s3cr3t" "postgresql://u:s3cr3t@127.0.0.1:1/x"; do
    timeout -s INT 6 "$top/run.sh" --pg "$conn" --listen off --data "$tmp/pg-bridge" >"$log" 2>&1
    grep -q "== sa-bridge run --pg" "$log" || fail "--pg did not start the bridge"
    grep -q "cannot connect to PostgreSQL" "$log" || fail "--pg: the bridge did not try $conn"
    ! grep -q "s3cr3t" "$log" || fail "--pg echoed the password"
done
ok "--pg CONNINFO runs the bridge and never echoes the password"
