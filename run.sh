#!/usr/bin/env bash
# run.sh — set up and run the main job: the sa-bridge daemon.
#
#   ./run.sh [sa-bridge run options...]
#
# Installs what is missing, builds, then runs `sa-bridge run` with the
# arguments given (see `sa-bridge run --help`).  Without arguments it starts
# a local throwaway PostgreSQL with a demo table, public.items, and runs the
# bridge against it with a throwaway data directory; Ctrl-C stops both and
# removes them.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
top=$(pwd)
. "$top/scripts/deps.sh"
sa_install_deps
build=${SA_BUILD_DIR:-$top/build}
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" --target sa-bridge
bridge="$build/bridge/sa-bridge"
if [ $# -gt 0 ]; then
  exec "$bridge" run "$@"
fi

echo "== no arguments: a throwaway PostgreSQL with a demo table public.items (Ctrl-C stops all)"
data=$(mktemp -d "${TMPDIR:-/tmp}/sa-run-XXXXXX")
trap 'rm -rf "$data"' EXIT
cat > "$data/demo.sh" <<'DEMO'
set -e
psql -q -c "CREATE TABLE public.items (id int PRIMARY KEY, name text, price numeric)"
psql -q -c "INSERT INTO public.items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 1000) g"
echo "== PostgreSQL: $SA_PG_CONNINFO"
echo "== try: psql '$SA_PG_CONNINFO' -c 'UPDATE public.items SET price = price + 1 WHERE id < 10'"
echo "==      $1 wal --data $2 --json"
exec "$1" run --data "$2" --tables public.items
DEMO
# pgh.sh starts the cluster (as the postgres user when root), exports PG*,
# runs the command and removes the cluster afterwards, even if killed.
bash "$top/tests/harness/pgh.sh" run -- bash "$data/demo.sh" "$bridge" "$data/bridge"
