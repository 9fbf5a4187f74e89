#!/usr/bin/env bash
# Creates the relora auth tokens that deploy/k8s/base's secretGenerator reads:
#   deploy/k8s/base/tokens/client-token   for the CLI and other clients
#   deploy/k8s/base/tokens/worker-token   for the workers
# 32 random bytes each, hex-encoded, no trailing newline. Existing tokens are kept unless
# --force is given. The directory is git-ignored.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/base/tokens"
force=0
[ "${1:-}" = "--force" ] && force=1
umask 077
mkdir -p "$dir"
for name in client-token worker-token; do
  f="$dir/$name"
  if [ -s "$f" ] && [ "$force" -eq 0 ]; then
    echo "keeping $f"
    continue
  fi
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$f"
  echo "wrote $f"
done
