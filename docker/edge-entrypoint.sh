#!/bin/sh
# docker/edge-entrypoint.sh — entry point of the edge image: on first start
# create the store in $SA_EDGE_DATA (default /var/lib/sa-edge) for the peer
# $SA_EDGE_PEER, then run `sa-edge ARGS...` (default: sync --follow).  The
# bridge URL and token come from the environment at every start
# (SA_BRIDGE_URL, SA_EDGE_TOKEN), and sa-edge stores them, so a rotated token
# only needs a restart with the new one.
set -eu
data=${SA_EDGE_DATA:-/var/lib/sa-edge}
: "${SA_EDGE_PEER:?SA_EDGE_PEER must name the peer (softadastra.create_peer)}"
: "${SA_EDGE_TOKEN:?SA_EDGE_TOKEN must hold the peer's token}"
: "${SA_BRIDGE_URL:?SA_BRIDGE_URL must be the bridge, e.g. http://bridge:8433}"
sa_edge=${SA_EDGE_BIN:-sa-edge}

# No store yet (status fails): make one.  Any other reason status failed
# makes init fail too, with sa-edge's message, and the container stop.
if ! "$sa_edge" --data "$data" status >/dev/null 2>&1; then
    echo "sa-edge-entrypoint: creating the store of peer $SA_EDGE_PEER in $data"
    "$sa_edge" --data "$data" --bridge "$SA_BRIDGE_URL" --token "$SA_EDGE_TOKEN" \
        init --peer "$SA_EDGE_PEER"
fi
[ $# -gt 0 ] || set -- sync --follow
exec "$sa_edge" --data "$data" --bridge "$SA_BRIDGE_URL" --token "$SA_EDGE_TOKEN" "$@"
