# scripts/deps.sh — sourced by test.sh and run.sh: install what a clean
# Debian 12 lacks to build and test Softadastra.  Only Debian packages.
# help2man writes the man pages at build time (groff-base renders them in
# tests/integration/test_install.sh); docker-compose only validates
# docker-compose.yml (tests/integration/test_docker_compose.sh) — it comes
# without the Docker engine (--no-install-recommends), which nothing here
# needs or starts; curl runs the compose file's bridge healthcheck there.
SA_DEB_PACKAGES=(
  build-essential cmake pkg-config make git ca-certificates
  librocksdb-dev libcmocka-dev libjansson-dev libmicrohttpd-dev
  libcurl4-openssl-dev libpq-dev
  postgresql-15 postgresql-client-15 postgresql-server-dev-15
  util-linux procps
  help2man groff-base
  docker-compose curl
)

pg_config_path() {
  local c
  for c in /usr/lib/postgresql/15/bin/pg_config "$(command -v pg_config 2>/dev/null)"; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return; }
  done
  echo pg_config
}

sa_install_deps() {
  local missing=() p
  for p in "${SA_DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing missing packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  # Debian's postgresql package would start a system cluster: we never use
  # it (tests start their own), so keep services from starting at install.
  local rcd=/usr/sbin/policy-rc.d created_rcd=0
  if [ "$(id -u)" = 0 ] && [ ! -e "$rcd" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$rcd" && chmod +x "$rcd" && created_rcd=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ $created_rcd = 1 ] && rm -f "$rcd"
  return 0
}
