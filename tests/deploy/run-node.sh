#!/usr/bin/env bash
# Runs a tests/deploy node script; skipped (77) where Node.js is not installed.
if ! command -v node >/dev/null 2>&1; then
  echo "node not found: skipped (apt-get install nodejs)"
  exit 77
fi
exec node "$@"
