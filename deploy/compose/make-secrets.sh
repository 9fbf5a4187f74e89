#!/usr/bin/env bash
# Creates the secrets docker-compose.yml reads, in deploy/compose/secrets/ (git-ignored):
#   client-token            for the relora CLI (and any other client)
#   worker-token            for the workers
#   grafana-admin-password  Grafana's admin password
# Random, hex-encoded, no trailing newline. Existing files are kept unless --force is given.
# Compose bind-mounts secret files with their host permissions, so the files are world-readable
# (0644: the containers run as uid 10001) inside a directory only you can enter (0700).
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
force=0
[ "${1:-}" = "--force" ] && force=1
mkdir -p "$dir"
chmod 700 "$dir"
for name in client-token worker-token grafana-admin-password; do
  f="$dir/$name"
  if [ -s "$f" ] && [ "$force" -eq 0 ]; then
    echo "keeping $f"
    continue
  fi
  bytes=32
  [ "$name" = grafana-admin-password ] && bytes=16
  od -An -N"$bytes" -tx1 /dev/urandom | tr -d ' \n' > "$f"
  chmod 644 "$f"
  echo "wrote $f"
done
