#!/usr/bin/env bash
# Makes the images the container tests start from when no registry is reachable, once (kept in
# podman's image store; a second run takes a second):
#   docker.io/library/debian:bookworm and :bookworm-slim  debootstrap --variant=minbase of Debian 12
#                                                          from the mirror apt uses, apt lists and
#                                                          docs removed as in Debian's slim images
#   docker.io/prom/prometheus:v2.55.1                      Dockerfile.prometheus: Debian's prometheus
#                                                          package under the name the compose file uses
# Usage: base-images.sh [--force]   (root; needs podman and debootstrap)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
force=0
[ "${1:-}" = "--force" ] && force=1

have() { [ "$force" -eq 0 ] && podman image exists "$1"; }

mirror() {
  # The first deb.debian.org-style URI of apt's sources (deb822 or one-line format).
  local uri
  uri="$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null \
         | grep -v security | head -1 | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' \
         | awk '{print $1}')"
  echo "${uri:-http://deb.debian.org/debian}"
}

if ! have docker.io/library/debian:bookworm || ! have docker.io/library/debian:bookworm-slim; then
  root="$(mktemp -d /var/tmp/relora-bookworm.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  echo "base-images: debootstrap bookworm from $(mirror) (about 1-4 minutes)"
  start=$SECONDS
  debootstrap --variant=minbase bookworm "$root" "$(mirror)" > "$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; echo "error: debootstrap failed (log above)" >&2; exit 1; }
  rm -f "$root.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  tar -C "$root" -c . | podman import --change 'CMD ["bash"]' - docker.io/library/debian:bookworm >/dev/null
  podman tag docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim
  echo "base-images: debian:bookworm(-slim) made in $((SECONDS - start)) s"
fi

if ! have docker.io/prom/prometheus:v2.55.1; then
  start=$SECONDS
  podman build -q --format docker -f "$here/Dockerfile.prometheus" -t docker.io/prom/prometheus:v2.55.1 "$here" >/dev/null
  echo "base-images: prometheus stand-in built in $((SECONDS - start)) s"
fi
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
  | grep -E 'debian:bookworm|prom/prometheus' | sed 's/^/base-images: /'
