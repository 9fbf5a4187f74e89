#!/usr/bin/env bash
# Renders deploy/k8s with `kubectl kustomize` into OUT_DIR: base.yaml (without the
# load-restrictor flag: the base must not need it), cpu.yaml and gpu.yaml (the overlays, with
# --load-restrictor LoadRestrictionsNone for the dashboards component, as docs/deploy.md does).
# Renders a copy of deploy/k8s and dashboards/ (same relative layout) with placeholder tokens,
# so the source tree is never written to and a developer's real tokens are never read.
# Usage: k8s-render.sh SOURCE_DIR OUT_DIR
set -euo pipefail
src="$1"
out="$2"
if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl not found: cannot render the manifests"
  exit 77
fi
tree="$out/tree"
rm -rf "$tree"
mkdir -p "$tree/deploy" "$out"
cp -r "$src/deploy/k8s" "$tree/deploy/k8s"
cp -r "$src/dashboards" "$tree/dashboards"
rm -rf "$tree/deploy/k8s/base/tokens"
mkdir -p "$tree/deploy/k8s/base/tokens"
printf 'test-client-token' > "$tree/deploy/k8s/base/tokens/client-token"
printf 'test-worker-token' > "$tree/deploy/k8s/base/tokens/worker-token"

status=0
render() {  # name dir [flags...]
  local name="$1" dir="$2"
  shift 2
  if kubectl kustomize "$@" "$dir" > "$out/$name.yaml.tmp" 2> "$out/$name.err"; then
    mv "$out/$name.yaml.tmp" "$out/$name.yaml"
    echo "rendered $name: $(grep -c '^kind:' "$out/$name.yaml") objects -> $out/$name.yaml"
  else
    echo "FAIL kubectl kustomize $* deploy/k8s/${dir#"$tree/deploy/k8s/"}:"
    cat "$out/$name.err"
    rm -f "$out/$name.yaml" "$out/$name.yaml.tmp"
    status=1
  fi
}
render base "$tree/deploy/k8s/base"
for overlay in "$tree"/deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  render "$name" "$overlay" --load-restrictor LoadRestrictionsNone
done
for required in cpu gpu; do
  [ -f "$out/$required.yaml" ] || { echo "FAIL overlay $required missing or not rendered"; status=1; }
done
exit "$status"
