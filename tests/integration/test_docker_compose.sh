#!/usr/bin/env bash
# test_docker_compose.sh — the docker-compose demo (docker-compose.yml,
# docker/), without a Docker engine:
#  1. `docker-compose config` accepts the file, and refuses it when a secret
#     is not given (no default password or token) — and does reject a broken
#     file, so its "yes" means something;
#  2. the resolved config has what the demo needs: postgres with
#     wal_level=logical and pg_isready, the bridge with GET /healthz, two
#     edges running `sync --follow`, start order by service_healthy, a volume
#     for every data directory, tokens from the environment;
#  3. docker/Dockerfile has the targets the file builds, runtime images
#     without compilers, no secret in any instruction; .dockerignore keeps
#     build trees and .env out of the build context;
#  4. the wiring, on this machine: the postgres image's init script run in a
#     throwaway cluster makes peers whose tokens the bridge accepts; sa-bridge
#     started with the compose file's own arguments passes the compose file's
#     healthcheck; each edge started by the image's entry point pulls the demo
#     table (needs the built binaries and the installed extension, as
#     ./test.sh provides; skipped otherwise).
set -euo pipefail

src=${SA_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
mkdir -p "${SA_TEST_TMPDIR:-/tmp}"
tmp=$(mktemp -d "${SA_TEST_TMPDIR:-/tmp}/compose_sh_test.XXXXXX")
bridge_pid=
pgdir=
cleanup() {
    if [[ -n $bridge_pid ]]; then
        kill "$bridge_pid" 2>/dev/null || true
        wait "$bridge_pid" 2>/dev/null || true
    fi
    [[ -z $pgdir ]] || bash "$src/tests/harness/pgh.sh" stop "$pgdir" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

compose_file=$src/docker-compose.yml
dockerfile=$src/docker/Dockerfile
[[ -f $compose_file ]] || fail "no $compose_file"
[[ -f $dockerfile ]] || fail "no $dockerfile"
command -v docker-compose >/dev/null || fail "docker-compose not found: apt-get install docker-compose"

# The secrets, as a user would export them.  A .env in the source tree must
# not change what is tested: an empty env file replaces it.
: >"$tmp/empty.env"
export POSTGRES_PASSWORD=test-password SA_EDGE_A_TOKEN=test-token-a SA_EDGE_B_TOKEN=test-token-b
unset SA_BRIDGE_PORT
compose() { docker-compose --env-file "$tmp/empty.env" --project-directory "$src" -f "$1" "${@:2}"; }

# --- 1. valid, secrets required, and the validator validates ------------------
compose "$compose_file" config -q 2>"$tmp/err" || fail "docker-compose config -q: $(cat "$tmp/err")"
compose "$compose_file" config >"$tmp/config.yml" 2>"$tmp/err" || fail "docker-compose config: $(cat "$tmp/err")"
ok "docker-compose config accepts docker-compose.yml"

for v in POSTGRES_PASSWORD SA_EDGE_A_TOKEN SA_EDGE_B_TOKEN; do
    if (unset "$v"; compose "$compose_file" config -q) >/dev/null 2>"$tmp/err"; then
        fail "docker-compose config succeeds without $v: the file must not default a secret"
    fi
    grep -q "$v" "$tmp/err" || fail "without $v, the error does not name it: $(cat "$tmp/err")"
done
ok "without POSTGRES_PASSWORD or a token, config fails naming it"

sed 's/condition: service_healthy/condition: service_wealthy/' "$compose_file" >"$tmp/bad.yml"
set +e
compose "$tmp/bad.yml" config -q >/dev/null 2>&1
rc=$?
set -e
[[ $rc != 0 ]] || fail "docker-compose config accepts an invalid depends_on condition: it does not validate"
ok "docker-compose config rejects an invalid file"

# --- 2. what the resolved config holds -------------------------------------------
python3 - "$tmp/config.yml" <<'PY' || fail "the resolved compose config lacks what the demo needs (above)"
import sys, yaml

cfg = yaml.safe_load(open(sys.argv[1]))
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)

services = cfg.get("services", {})
for s in ("postgres", "bridge", "edge-a", "edge-b"):
    check(s in services, f"no service {s}")
if errors:
    print("\n".join(errors), file=sys.stderr); sys.exit(1)

def cmd(svc):
    c = services[svc].get("command") or []
    return c.split() if isinstance(c, str) else list(c)
def test(svc):
    t = (services[svc].get("healthcheck") or {}).get("test") or []
    return " ".join(t) if isinstance(t, list) else t
def env(svc):
    e = services[svc].get("environment") or {}
    return e if isinstance(e, dict) else dict(x.split("=", 1) for x in e)
def volume_targets(svc):
    out = []
    for v in services[svc].get("volumes") or []:
        if isinstance(v, dict):
            out.append((v.get("type"), v.get("source"), v.get("target")))
        else:
            parts = v.split(":")
            out.append(("volume", parts[0], parts[1]))
    return out

pg, br = services["postgres"], services["bridge"]
for s, t in (("postgres", "postgres"), ("bridge", "bridge"), ("edge-a", "edge"), ("edge-b", "edge")):
    b = services[s].get("build") or {}
    check(b.get("target") == t, f"{s} is not built from target {t}: {b}")
    check(str(b.get("dockerfile", "")).endswith("docker/Dockerfile"), f"{s} is not built by docker/Dockerfile")

c = cmd("postgres")
check("wal_level=logical" in c, f"postgres does not run with wal_level=logical: {c}")
check("pg_isready" in test("postgres"), "postgres has no pg_isready healthcheck")
check("/healthz" in test("bridge"), "the bridge's healthcheck does not GET /healthz")

c = cmd("bridge")
check(c[:1] == ["run"], f"the bridge does not run 'sa-bridge run': {c}")
check("--listen" in c and c[c.index("--listen") + 1].startswith("0.0.0.0:"),
      "the bridge does not listen on all interfaces of its container")
check("--data" in c, "the bridge has no --data")
be = env("bridge")
check(be.get("PGHOST") == "postgres", "the bridge's PGHOST is not the postgres service")
check(be.get("PGPASSWORD") == "test-password", "the bridge's PGPASSWORD is not POSTGRES_PASSWORD")

dep = (br.get("depends_on") or {}).get("postgres") or {}
check(dep.get("condition") == "service_healthy", "the bridge does not wait for a healthy postgres")

tokens = {"edge-a": "test-token-a", "edge-b": "test-token-b"}
pe = env("postgres")
check(pe.get("POSTGRES_PASSWORD") == "test-password", "postgres' password is not POSTGRES_PASSWORD")
for s, tok in tokens.items():
    e = env(s)
    check(cmd(s) == ["sync", "--follow"], f"{s} does not run 'sync --follow': {cmd(s)}")
    check(e.get("SA_EDGE_PEER") == s, f"{s}'s SA_EDGE_PEER is not {s}")
    check(e.get("SA_EDGE_TOKEN") == tok, f"{s}'s token does not come from the environment")
    check(e.get("SA_EDGE_BRIDGE", "").startswith("http://bridge:"), f"{s} does not talk to the bridge service")
    dep = (services[s].get("depends_on") or {}).get("bridge") or {}
    check(dep.get("condition") == "service_healthy", f"{s} does not wait for a healthy bridge")
check(pe.get("SA_EDGE_A_TOKEN") == "test-token-a" and pe.get("SA_EDGE_B_TOKEN") == "test-token-b",
      "postgres' init script does not get the edges' tokens from the environment")

named = set((cfg.get("volumes") or {}).keys())
for s, target in (("postgres", "/var/lib/postgresql/data"), ("bridge", "/var/lib/sa-bridge"),
                  ("edge-a", "/var/lib/sa-edge"), ("edge-b", "/var/lib/sa-edge")):
    vols = volume_targets(s)
    hit = [v for v in vols if v[2] == target]
    check(hit and hit[0][0] == "volume" and hit[0][1] in named,
          f"{s}'s data directory {target} is not on a named volume: {vols}")
srcs = [volume_targets(s)[0][1] for s in ("postgres", "bridge", "edge-a", "edge-b")]
check(len(set(srcs)) == 4, f"services share a data volume: {srcs}")

if errors:
    print("\n".join(errors), file=sys.stderr); sys.exit(1)
PY
ok "services, healthchecks, start order, data volumes and tokens from the environment"

# --- 3. Dockerfile and .dockerignore --------------------------------------------
for t in build pgext-build postgres bridge edge; do
    grep -Eqi "^FROM [^ ]+ AS $t\$" "$dockerfile" || fail "docker/Dockerfile has no stage $t"
done
stage() { awk -v t="$1" 'toupper($1) == "FROM" { on = (tolower($NF) == t) } on' "$dockerfile"; }
for t in bridge edge; do
    st=$(stage "$t")
    grep -Eq '^FROM debian:12-slim AS' <<<"$st" || fail "the $t image is not debian:12-slim"
    if grep -Eq 'build-essential|-dev\b|cmake|gcc' <<<"$st"; then
        fail "the $t image installs build tools: it must hold the runtime libraries only"
    fi
    grep -q 'COPY --from=build ' <<<"$st" || fail "the $t image does not take its binary from the build stage"
done
st=$(stage postgres)
grep -Eq '^FROM postgres:\$\{PG_MAJOR\}-bookworm AS|^FROM postgres:15-bookworm AS' <<<"$st" ||
    fail "the postgres image is not postgres:15-bookworm"
grep -q 'docker-entrypoint-initdb.d' <<<"$st" || fail "the postgres image has no init script"
if grep -Eiq '^(ENV|ARG|LABEL)\b.*(TOKEN|PASSWORD|SECRET)' "$dockerfile"; then
    fail "docker/Dockerfile puts a secret into an image"
fi
# Every file the Dockerfile copies from the context exists and is not ignored.
while read -r f; do
    [[ -e $src/$f ]] || fail "docker/Dockerfile copies $f, which does not exist"
done < <(sed -n 's/^COPY \([^-][^ ]*\) .*/\1/p' "$dockerfile" | grep -v '^\.$')
for f in docker/edge-entrypoint.sh docker/initdb/10-softadastra-demo.sh; do
    [[ -x $src/$f ]] || fail "$f is not executable"
    sh -n "$src/$f" || fail "$f: syntax error"
done
# The token reaches sa-edge through its environment, never its command line
# (which `ps` shows).
if grep -q -- '--token' "$src/docker/edge-entrypoint.sh"; then
    fail "docker/edge-entrypoint.sh puts the token on sa-edge's command line"
fi
ign=$src/.dockerignore
[[ -f $ign ]] || fail "no .dockerignore"
for p in 'build*/' .git .env .run/; do
    grep -qxF -- "$p" "$ign" || fail ".dockerignore does not exclude $p"
done
ok "Dockerfile: the targets, runtime-only bridge and edge images, no secrets; .dockerignore"

# --- 4. the wiring, without Docker ---------------------------------------------
bin=${SA_BINARY_DIR:-}
pg_config=$(command -v pg_config || echo /usr/lib/postgresql/15/bin/pg_config)
if [[ -z $bin || ! -x $bin/bridge/sa-bridge || ! -x $bin/edge/sa-edge ]]; then
    echo "ok - # SKIP wiring: no built sa-bridge / sa-edge (SA_BINARY_DIR)"
    echo "all ok"
    exit 0
fi
if [[ ! -f $("$pg_config" --sharedir)/extension/softadastra.control ]]; then
    echo "ok - # SKIP wiring: the softadastra extension is not installed (./test.sh installs it)"
    echo "all ok"
    exit 0
fi

export SA_TEST_TMPDIR=$tmp
eval "$(bash "$src/tests/harness/pgh.sh" start)"
pgdir=$SA_PGH_DIR

# The init script as the postgres image runs it: its environment, psql on
# the server's socket or host.
POSTGRES_USER=$PGUSER POSTGRES_DB=$PGDATABASE \
    "$src/docker/initdb/10-softadastra-demo.sh" >"$tmp/init.log" 2>&1 ||
    fail "the init script failed: $(cat "$tmp/init.log")"
if grep -Eq '[A-Za-z0-9_-]{43}' "$tmp/init.log"; then
    fail "the init script printed a token into the log: $(cat "$tmp/init.log")"
fi
got=$(psql -XAt -c "SELECT softadastra.check_token('edge-a', 'test-token-a'),
                           softadastra.check_token('edge-b', 'test-token-b'),
                           softadastra.check_token('edge-a', 'test-token-b'),
                           (SELECT count(*) FROM softadastra.tables),
                           (SELECT count(*) FROM public.items)")
[[ $got == 't|t|f|1|2' ]] || fail "after the init script: check_token/tables/items said '$got'"
ok "the init script: extension, public.items synced, peers with the environment's tokens"

# The postgres healthcheck, as written in the file (the harness listens on
# 127.0.0.1 at $PGPORT).
hc=$(python3 -c 'import sys,yaml; t=yaml.safe_load(open(sys.argv[1]))["services"]["postgres"]["healthcheck"]["test"]; print(t[1] if t[0]=="CMD-SHELL" else "")' "$tmp/config.yml")
[[ -n $hc ]] || fail "postgres' healthcheck is not CMD-SHELL"
(export PATH=$(dirname "$pg_config"):$PATH POSTGRES_USER=$PGUSER POSTGRES_DB=$PGDATABASE
 sh -c "$hc") >/dev/null || fail "postgres' healthcheck '$hc' fails on a running server"
ok "postgres' healthcheck passes on a running server"

# sa-bridge with the compose file's arguments, but its data directory and a
# free local port.
mapfile -t args < <(python3 -c '
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))["services"]["bridge"]["command"]
for i, a in enumerate(c):
    if i > 0 and c[i - 1] == "--data": a = sys.argv[2]
    if i > 0 and c[i - 1] == "--listen": a = "127.0.0.1:0"
    print(a)' "$tmp/config.yml" "$tmp/bridge")
PGPASSWORD=$POSTGRES_PASSWORD "$bin/bridge/sa-bridge" "${args[@]}" >"$tmp/bridge.log" 2>&1 &
bridge_pid=$!
port=
for _ in $(seq 300); do
    kill -0 "$bridge_pid" 2>/dev/null || fail "sa-bridge ${args[*]} exited: $(tail -5 "$tmp/bridge.log")"
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$tmp/bridge.log" | head -1)
    [[ -n $port ]] && break
    sleep 0.1
done
[[ -n $port ]] || fail "sa-bridge did not say its port: $(tail -5 "$tmp/bridge.log")"
mapfile -t hc < <(python3 -c 'import sys,yaml; print("\n".join(yaml.safe_load(open(sys.argv[1]))["services"]["bridge"]["healthcheck"]["test"]))' "$tmp/config.yml")
[[ ${hc[0]} == CMD ]] || fail "the bridge's healthcheck is not CMD: ${hc[*]}"
hc=("${hc[@]:1}")
hc=("${hc[@]/127.0.0.1:8433/127.0.0.1:$port}")
healthy=0
for _ in $(seq 100); do
    if "${hc[@]}" >/dev/null 2>&1; then healthy=1; break; fi
    sleep 0.2
done
((healthy)) || fail "the bridge's healthcheck (${hc[*]}) never passed: $(tail -5 "$tmp/bridge.log")"
ok "sa-bridge runs with the compose file's arguments and passes its healthcheck"

for e in edge-a edge-b; do
    tok=$SA_EDGE_A_TOKEN
    [[ $e == edge-b ]] && tok=$SA_EDGE_B_TOKEN
    run_edge() {
        PATH=$bin/edge:$PATH SA_EDGE_DATA=$tmp/$e SA_EDGE_PEER=$e SA_EDGE_TOKEN=$tok \
            SA_EDGE_BRIDGE=http://127.0.0.1:$port "$src/docker/edge-entrypoint.sh" "$@"
    }
    run_edge sync >"$tmp/$e.log" 2>&1 || fail "$e: entrypoint + sync failed: $(cat "$tmp/$e.log")"
    grep -q "creating the store of peer $e" "$tmp/$e.log" || fail "$e: the entrypoint did not create the store"
    run_edge sync >"$tmp/$e.log" 2>&1 || fail "$e: second start failed: $(cat "$tmp/$e.log")"
    if grep -q "creating the store" "$tmp/$e.log"; then
        fail "$e: the entrypoint created the store again on its second start"
    fi
    rows=$(run_edge list items) || fail "$e: list items failed"
    [[ $(grep -c '"public.items"' <<<"$rows") == 2 ]] || fail "$e does not hold the demo's 2 rows: $rows"
done
ok "each edge, started by the image's entrypoint, creates its store once and pulls public.items"
echo "all ok"
