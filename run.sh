#!/usr/bin/env bash
# run.sh — set up and run the main job: the sa-bridge daemon.
#
#   ./run.sh [sa-bridge run options...]
#
# Installs what is missing, builds, then runs `sa-bridge run` with the
# arguments given.  Without arguments the bridge is meant to start a local
# throwaway PostgreSQL (quick start).  Until the ingest issue lands,
# sa-bridge says that it is not built yet and this script exits non-zero.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
top=$(pwd)
. "$top/scripts/deps.sh"
sa_install_deps
cmake -S "$top" -B "$top/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$top/build" -j "$(nproc)" --target sa-bridge
exec "$top/build/bridge/sa-bridge" run "$@"
