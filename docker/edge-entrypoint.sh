#!/bin/sh
# docker/edge-entrypoint.sh — entry point of the edge image: on first start
# create the store for the peer, then run `sa-edge ARGS...` (default: sync
# --follow).  sa-edge reads its settings from the environment, so the token
# never appears on a command line:
#   SA_EDGE_DATA    the store's directory (default here: /var/lib/sa-edge)
#   SA_EDGE_BRIDGE  the bridge, e.g. http://bridge:8433
#   SA_EDGE_TOKEN   the peer's token
#   SA_EDGE_PEER    the peer's name (used by init)
# sa-edge stores the bridge and token given at each start, so a rotated token
# only needs a restart with the new one.
set -eu
export SA_EDGE_DATA="${SA_EDGE_DATA:-/var/lib/sa-edge}"
: "${SA_EDGE_PEER:?SA_EDGE_PEER must name the peer (softadastra.create_peer)}"
: "${SA_EDGE_TOKEN:?SA_EDGE_TOKEN must hold the peer's token}"
: "${SA_EDGE_BRIDGE:?SA_EDGE_BRIDGE must be the bridge, e.g. http://bridge:8433}"
sa_edge=${SA_EDGE_BIN:-sa-edge}

# No store yet (status fails): make one.  Any other reason status failed
# makes init fail too, with sa-edge's message, and the container stop.
if ! "$sa_edge" status >/dev/null 2>&1; then
    echo "sa-edge-entrypoint: creating the store of peer $SA_EDGE_PEER in $SA_EDGE_DATA"
    "$sa_edge" init
fi
[ $# -gt 0 ] || set -- sync --follow
exec "$sa_edge" "$@"
