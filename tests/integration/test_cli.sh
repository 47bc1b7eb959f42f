#!/usr/bin/env bash
# test_cli.sh — sa-bridge's command line without a database: help texts,
# exit statuses (0 ok, 1 runtime error, 2 unavailable, 64 usage), and
# the messages of usage and config-file errors.  The binary is
# $SA_BINARY_DIR/bridge/sa-bridge (SA_BIN overrides it).
set -euo pipefail

bin=${SA_BIN:-${SA_BINARY_DIR:?SA_BINARY_DIR must name the build directory}/bridge/sa-bridge}
[[ -x $bin ]] || { echo "FAIL: no binary at $bin" >&2; exit 1; }
tmp=${SA_TEST_TMPDIR:-/tmp}/cli_sh_test.$$
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

# run CMD...: sets $rc, $out (stdout), $err (stderr); never aborts the script.
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

# --- help and version ----------------------------------------------------
run "$bin" --help
expect_rc 0 "--help"
for cmd in run wal drop-slot status; do
    grep -Eq "^  $cmd +[a-z]" <<<"$out" || fail "--help does not list '$cmd'"
done
ok "--help lists every command"

run "$bin" --version
expect_rc 0 "--version"
[[ $out =~ ^sa-bridge\ [0-9]+\.[0-9]+ ]] || fail "--version said '$out'"
ok "--version"

run "$bin" run --help
expect_rc 0 "run --help"
for opt in --pg --data --slot --publication --tables --config --durability \
    --status-interval-ms --dead-after-ms --retry-base-ms --retry-cap-ms --txn-memory-kb \
    --progress --no-progress --log-level --help; do
    grep -q -- "^  $opt\b" <<<"$out" || fail "run --help does not describe $opt"
done
for word in PGHOST PGPASSWORD "key = value" "# /etc/sa-bridge.conf" "exit status"; do
    [[ $out == *"$word"* ]] || fail "run --help does not mention '$word'"
done
ok "run --help describes every option, the config file and PG*"

run "$bin" run --data "$tmp/d" --slot x --help
expect_rc 0 "run ... --help"
ok "run --help anywhere"

run "$bin" wal --help
expect_rc 0 "wal --help"
for opt in --data --from --limit --json; do
    grep -q -- "^  $opt\b" <<<"$out" || fail "wal --help does not describe $opt"
done
run "$bin" drop-slot --help
expect_rc 0 "drop-slot --help"
for opt in --pg --data --slot; do
    grep -q -- "^  $opt\b" <<<"$out" || fail "drop-slot --help does not describe $opt"
done
ok "wal --help, drop-slot --help"

# --- usage errors: 64 ----------------------------------------------------
run "$bin"
expect_rc 64 "no command"
run "$bin" frobnicate
expect_rc 64 "unknown command"
expect_err "unknown command 'frobnicate'" "unknown command"
run "$bin" --frobnicate
expect_rc 64 "unknown global option"
ok "unknown command / option: 64"

run "$bin" run
expect_rc 64 "run without --data"
expect_err "--data is required" "run without --data"
run "$bin" run --data "$tmp/d" --bogus
expect_rc 64 "run --bogus"
expect_err "unknown option '--bogus'" "run --bogus"
run "$bin" run --data "$tmp/d" --slot a --slot b
expect_rc 64 "duplicate flag"
expect_err "'--slot' given twice" "duplicate flag"
run "$bin" run --data "$tmp/d" --durability fast
expect_rc 64 "bad durability"
expect_err "--durability: unknown policy 'fast'" "bad durability"
run "$bin" run --data "$tmp/d" --status-interval-ms 5
expect_rc 64 "number out of range"
expect_err "--status-interval-ms: 5 is out of range" "number out of range"
run "$bin" run --data "$tmp/d" --slot BAD
expect_rc 64 "bad slot name"
ok "run usage errors: 64 with the reason"

printf 'data = %s\n# comment\n\nslott = x\n' "$tmp/d" >"$tmp/bad.conf"
run "$bin" run --config "$tmp/bad.conf"
expect_rc 64 "bad config key"
expect_err "$tmp/bad.conf:4: unknown key 'slott'" "bad config key"
printf 'data = %s\nslot = a\nslot = b\n' "$tmp/d" >"$tmp/dup.conf"
run "$bin" run --config "$tmp/dup.conf"
expect_rc 64 "duplicate config key"
expect_err "dup.conf:3: duplicate key 'slot' (first set on line 2)" "duplicate config key"
run "$bin" run --config "$tmp/missing.conf"
expect_rc 64 "missing config file"
expect_err "missing.conf" "missing config file"
ok "config file errors: 64 naming file, line and key"

run "$bin" wal
expect_rc 64 "wal without --data"
expect_err "--data is required" "wal without --data"
run "$bin" wal --data "$tmp" --limit ten
expect_rc 64 "wal --limit ten"
expect_err "--limit: 'ten' is not a whole number" "wal --limit ten"
run "$bin" wal --data "$tmp" --json --json
expect_rc 64 "wal --json --json"
run "$bin" drop-slot
expect_rc 64 "drop-slot with nothing to drop"
expect_err "--slot NAME" "drop-slot with nothing to drop"
run "$bin" drop-slot --slot "Bad Name"
expect_rc 64 "drop-slot bad name"
ok "wal / drop-slot usage errors: 64"

# --- runtime errors: 1 ---------------------------------------------------
run "$bin" wal --data "$tmp/nonexistent" --json
expect_rc 1 "wal on a missing dir"
expect_err "$tmp/nonexistent' does not exist" "wal on a missing dir"
[[ -z $out ]] || fail "wal on a missing dir printed '$out'"
[[ ! -e $tmp/nonexistent ]] || fail "wal created the missing data directory"
mkdir "$tmp/empty"
run "$bin" wal --data "$tmp/empty"
expect_rc 1 "wal on a non-data dir"
expect_err "is not a sa-bridge data directory" "wal on a non-data dir"
[[ ! -e $tmp/empty/store ]] || fail "wal created a store"
ok "wal errors: 1 with a message, nothing created"

mkdir -p "$tmp/nodata"
run "$bin" drop-slot --data "$tmp/nodata"
expect_rc 1 "drop-slot on a non-data dir"
expect_err "is not a sa-bridge data directory" "drop-slot on a non-data dir"
ok "drop-slot --data without a store: 1"

run "$bin" status --url http://127.0.0.1:1
expect_rc 2 "status with no bridge"
expect_err "no bridge answers at http://127.0.0.1:1" "status with no bridge"
ok "status: no bridge there (2)"
run "$bin" status --data "$tmp/nodata"
expect_rc 2 "status --data without a running bridge"
expect_err "api.url" "status --data without a running bridge"
ok "status --data without api.url (2)"
run "$bin" status --url x --data y
expect_rc 64 "status --url and --data"
ok "status --url with --data: usage (64)"
run "$bin" status --help
expect_rc 0 "status --help"
[[ $out == *"--json"* && $out == *"Exit status"* ]] || fail "status --help: $out"
ok "status --help"
# --- sa-edge takes --data/--bridge/--token/--peer from the environment ---
edge=${SA_EDGE_BIN:-${SA_BINARY_DIR}/edge/sa-edge}
if [[ -x $edge ]]; then
    run env SA_EDGE_DATA="$tmp/edge" SA_EDGE_PEER=envpeer SA_EDGE_BRIDGE=http://127.0.0.1:1 \
        SA_EDGE_TOKEN=tok-from-env "$edge" init
    expect_rc 0 "sa-edge init from the environment"
    run env SA_EDGE_DATA="$tmp/edge" "$edge" status --json
    expect_rc 0 "sa-edge status from SA_EDGE_DATA"
    [[ $out == *'"peer":"envpeer"'* || $out == *'"peer": "envpeer"'* ]] || fail "env peer: $out"
    [[ $out == *'http://127.0.0.1:1'* ]] || fail "env bridge: $out"
    [[ $out != *tok-from-env* ]] || fail "status shows the token: $out"
    run env SA_EDGE_DATA="$tmp/nowhere" "$edge" --data "$tmp/edge" status
    expect_rc 0 "a flag wins over its variable"
    run env -u SA_EDGE_DATA "$edge" status
    expect_rc 64 "sa-edge without --data"
    expect_err "SA_EDGE_DATA" "sa-edge without --data"
    ok "sa-edge: SA_EDGE_* variables stand for the flags, flags win"
fi

# --- SA_BRIDGE_* variables reach the settings (a bad one is named) -------
run env SA_BRIDGE_WAL_CAP_MB=0 "$bin" run --data "$tmp/d"
expect_rc 64 "a bad SA_BRIDGE_ variable"
expect_err "SA_BRIDGE_WAL_CAP_MB" "a bad SA_BRIDGE_ variable"
ok "SA_BRIDGE_WAL_CAP_MB=0 is refused, naming the variable"
echo "all ok"
