#!/usr/bin/env bash
# test_pg_harness.sh — the shell front end: `pgh.sh run` gives CMD a working
# cluster through PG* and SA_PG_CONNINFO, passes CMD's exit status through,
# and leaves nothing behind (also when killed with SIGKILL).
set -euo pipefail

# Next to this script, so it works from any build directory.
pgh=$(cd "$(dirname "$0")/../harness" && pwd)/pgh.sh
export SA_TEST_TMPDIR=${SA_TEST_TMPDIR:-/tmp}/pgh_sh_test.$$
mkdir -p "$SA_TEST_TMPDIR"
trap 'rm -rf "$SA_TEST_TMPDIR"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }
leftovers() { find "$SA_TEST_TMPDIR" -mindepth 1 -maxdepth 1 -name 'sa_pgh.*' | wc -l; }

out=$(bash "$pgh" run -- psql -XAtc 'select 1')
[[ $out == 1 ]] || fail "psql via PG* variables said '$out'"
ok "psql through PGHOST/PGPORT/PGUSER/PGDATABASE"

out=$(bash "$pgh" run -- sh -c 'psql -XAt "$SA_PG_CONNINFO" -c "show wal_level"')
[[ $out == logical ]] || fail "SA_PG_CONNINFO: wal_level is '$out'"
ok "SA_PG_CONNINFO works, wal_level = logical"

out=$(bash "$pgh" run -- sh -c 'psql -XAt -h 127.0.0.1 -c "select pg_create_logical_replication_slot(\$\$s\$\$, \$\$pgoutput\$\$) is not null"')
[[ $out == t ]] || fail "pgoutput slot over TCP: '$out'"
ok "pgoutput slot over TCP"

set +e
bash "$pgh" run -- sh -c 'exit 7'
rc=$?
set -e
[[ $rc == 7 ]] || fail "exit status not passed through: $rc"
ok "exit status passed through"
[[ $(leftovers) == 0 ]] || fail "cluster directories left behind"
ok "nothing left behind"

# start/stop pair
eval "$(bash "$pgh" start)"
[[ -d $SA_PGH_DIR ]] || fail "start: no dir"
[[ $(psql -XAtc 'select 2') == 2 ]] || fail "start: psql"
pid=$(head -n1 "$SA_PGH_DIR/data/postmaster.pid")
bash "$pgh" stop "$SA_PGH_DIR"
[[ ! -e $SA_PGH_DIR ]] || fail "stop: dir remains"
! kill -0 "$pid" 2>/dev/null || [[ $(ps -o stat= -p "$pid") == Z* ]] || fail "stop: server runs"
ok "start/stop"

# SIGKILL of pgh.sh: the watcher cleans up.
info=$SA_TEST_TMPDIR/info
bash "$pgh" run -- sh -c "echo \$SA_PGH_DIR > $info; exec sleep 60" &
runner=$!
for _ in $(seq 100); do [[ -s $info ]] && break; sleep 0.1; done
dir=$(cat "$info")
[[ -d $dir ]] || fail "SIGKILL: cluster did not start"
pid=$(head -n1 "$dir/data/postmaster.pid")
sleeper=$(pgrep -P "$runner" -x sleep || true)
kill -KILL "$runner"
wait "$runner" 2>/dev/null || true
[[ -z $sleeper ]] || kill "$sleeper" 2>/dev/null || true
for _ in $(seq 150); do [[ ! -e $dir ]] && break; sleep 0.1; done
[[ ! -e $dir ]] || fail "SIGKILL: dir remains"
! kill -0 "$pid" 2>/dev/null || [[ $(ps -o stat= -p "$pid") == Z* ]] || fail "SIGKILL: server runs"
ok "SIGKILL of pgh.sh: watcher cleaned up"
echo "all ok"
