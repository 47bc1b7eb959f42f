#!/usr/bin/env bash
# ./run.sh without arguments: a throwaway PostgreSQL with a demo table, the
# bridge copies it and streams; SIGINT stops everything and leaves nothing.
set -u
top=${SA_SOURCE_DIR:?}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail() { echo "FAIL: $*"; tail -30 "$log"; exit 1; }

SA_BUILD_DIR=${SA_BINARY_DIR:?} timeout -s INT 25 "$top/run.sh" >"$log" 2>&1
rc=$?
[ $rc -eq 124 ] || fail "run.sh ended on its own (exit $rc) instead of running until stopped"
grep -q "copied public.items: 1000 rows" "$log" || fail "the demo table was not copied"
grep -q "streaming from slot" "$log" || fail "the bridge did not start streaming"
grep -q "stopped cleanly" "$log" || fail "the bridge did not stop cleanly on SIGINT"
sleep 1
dir=$(sed -n 's/.*(data \(.*\)\/bridge, slot.*/\1/p' "$log" | head -1)
[ -n "$dir" ] && [ ! -e "$dir" ] || fail "the throwaway data directory $dir is still there"
echo "ok - run.sh quick start copies, streams and stops cleanly"
