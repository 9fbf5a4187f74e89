#!/usr/bin/env bash
# Installs the pinned validators of package-lock.json into NPM_DIR (in the build tree), once:
# a stamp holds the hash of package.json + package-lock.json, and a matching install is reused
# without touching the network (so the tests run offline after the first time).
# Usage: npm-install.sh NPM_DIR TESTS_DEPLOY_DIR
set -euo pipefail
npm_dir="$1"
src="$2"
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: the deploy validators cannot be installed (apt-get install npm); skipped"
  exit 77
fi
mkdir -p "$npm_dir"
cp "$src/deps.mjs" "$npm_dir/deps.mjs"
want="$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)"
stamp="$npm_dir/.installed-sha256"
if [ -d "$npm_dir/node_modules" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "deploy validators: up to date in $npm_dir"
  exit 0
fi
rm -f "$stamp"
cp "$src/package.json" "$src/package-lock.json" "$npm_dir/"
# --ignore-scripts: nothing from the registry runs at install time.
(cd "$npm_dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
echo "$want" > "$stamp"
echo "deploy validators: installed in $npm_dir"
