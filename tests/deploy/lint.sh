#!/usr/bin/env bash
# Lints the deployment files: yamllint (with deploy/.yamllint, the deploy tree's config) on the
# compose file, the Kubernetes manifests and the example jobs; shellcheck on the scripts.
# Skipped (77) when neither linter is installed (scripts/setup.sh installs both).
# Usage: lint.sh SOURCE_DIR
set -uo pipefail
src="$1"
cd "$src" || exit 1
ran=0
status=0
if command -v yamllint >/dev/null 2>&1; then
  ran=1
  mapfile -t yamls < <(find deploy/compose deploy/k8s tests/deploy/fixtures -name '*.y*ml' -not -path '*/secrets/*' -not -path '*/tokens/*' | sort)
  config=()
  [ -f deploy/.yamllint ] && config=(-c deploy/.yamllint)
  if yamllint --strict "${config[@]}" "${yamls[@]}"; then
    echo "yamllint: ${#yamls[@]} files clean"
  else
    status=1
  fi
else
  echo "yamllint not found: YAML not linted"
fi
if command -v shellcheck >/dev/null 2>&1; then
  ran=1
  scripts=(deploy/compose/make-secrets.sh deploy/k8s/make-tokens.sh tests/deploy/*.sh)
  if shellcheck "${scripts[@]}"; then
    echo "shellcheck: ${#scripts[@]} scripts clean"
  else
    status=1
  fi
else
  echo "shellcheck not found: scripts not checked"
fi
[ "$ran" -eq 1 ] || exit 77
exit "$status"
