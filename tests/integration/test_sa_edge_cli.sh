#!/usr/bin/env bash
# test_sa_edge_cli.sh — sa-edge's command line without a bridge: help,
# exit statuses (0 ok, 1 runtime error, 2 bridge unreachable, 64 usage),
# init, status --json, and the messages of refused input.  The sync paths
# against a real bridge are in test_edge.c.  The binary is
# $SA_BINARY_DIR/edge/sa-edge (SA_BIN overrides it).
set -euo pipefail

bin=${SA_BIN:-${SA_BINARY_DIR:?SA_BINARY_DIR must name the build directory}/edge/sa-edge}
[[ -x $bin ]] || { echo "FAIL: no binary at $bin" >&2; exit 1; }
tmp=${SA_TEST_TMPDIR:-/tmp}/sa_edge_cli_test.$$
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }
run() {
    set +e
    "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    set -e
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}
expect_rc() { [[ $rc == "$1" ]] || fail "$2: exit $rc, want $1 (stderr: $err)"; }
expect_err() { [[ $err == *"$1"* ]] || fail "$2: stderr lacks '$1': $err"; }

run "$bin" --help
expect_rc 0 "--help"
for cmd in init put delete get list sync status conflicts; do
    grep -Eq "^  $cmd\b" <<<"$out" || fail "--help does not list '$cmd'"
done
for code in 0 1 2 64; do
    grep -Eq "^  $code +[a-z]" <<<"$out" || fail "--help does not document exit status $code"
done
ok "--help lists every command and exit status"

run "$bin" --version
expect_rc 0 "--version"
[[ $out =~ ^sa-edge\ [0-9]+\.[0-9]+ ]] || fail "--version said '$out'"
ok "--version"

run "$bin"
expect_rc 64 "no command"
run "$bin" --data "$tmp/e" frobnicate
expect_rc 64 "unknown command"
expect_err "unknown command 'frobnicate'" "unknown command"
run "$bin" status
expect_rc 64 "no --data"
expect_err "--data DIR is required" "no --data"
run "$bin" --data "$tmp/e" put items
expect_rc 64 "put with one argument"
expect_err "put takes 2 arguments" "put with one argument"
run "$bin" --data "$tmp/e" init
expect_rc 64 "init without --peer"
expect_err "--peer" "init without --peer"
ok "usage errors exit 64 naming the problem"

run "$bin" --data "$tmp/e" status
expect_rc 1 "status before init"
expect_err "run sa-edge init first" "status before init"

run "$bin" --data "$tmp/e" --bridge http://127.0.0.1:1 --token t0ken init --peer till1
expect_rc 0 "init"
run "$bin" --data "$tmp/e" init --peer till1
expect_rc 1 "init twice"
expect_err "already holds an edge store" "init twice"
run "$bin" --data "$tmp/e" status --json
expect_rc 0 "status --json"
python3 - "$out" <<'PY' || fail "status --json is not the expected JSON: $out"
import json, sys
s = json.loads(sys.argv[1])
assert s["peer"] == "till1" and s["epoch"] > 0 and s["pending"] == 0, s
assert s["bridge"] == "http://127.0.0.1:1" and s["instance"] == "", s
PY
ok "init stores the peer, a random epoch and the bridge"

run "$bin" --data "$tmp/e" put items '{"id": 1}'
expect_rc 1 "put before any sync"
expect_err "sync" "put before any sync"
run "$bin" --data "$tmp/e" put items 'not json'
expect_rc 1 "put of malformed JSON"
expect_err "not valid JSON" "put of malformed JSON"
ok "refused local input exits 1 with a message"

run "$bin" --data "$tmp/e" sync
expect_rc 2 "sync with the bridge unreachable"
expect_err "Couldn't connect" "sync with the bridge unreachable"
run "$bin" --data "$tmp/e" status --json
python3 - "$out" <<'PY' || fail "status after a failed sync: $out"
import json, sys
s = json.loads(sys.argv[1])
assert s["attempts"] >= 1 and s["last_error"] and s["next_retry_ms"] > 0, s
PY
ok "an unreachable bridge exits 2 and is recorded (attempts, last error, next retry)"

run "$bin" --data "$tmp/e" conflicts --json
expect_rc 0 "conflicts"
[[ -z $out ]] || fail "conflicts of a new edge: $out"
ok "conflicts of a new edge: none"
