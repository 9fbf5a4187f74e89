#!/usr/bin/env bash
# Copies the binaries of a Debian 12 build tree (default: build/, made by scripts/build.sh) into
# deploy/docker/prebuilt/, where `docker build --build-arg RELORA_BINARIES=prebuilt` takes them
# instead of compiling the project inside the image (docs/deploy.md, "Reusing a build").
# The runtime images are Debian 12 too, and their build runs `ldd` on every binary, so a
# binary built against other libraries fails the image build rather than the first run.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
out=deploy/docker/prebuilt
files=(coordinator/relora-coordinator worker/relora-worker client/relora lib/librelora_spm.so)
for f in "${files[@]}"; do
  [ -f "$build/$f" ] || { echo "error: $build/$f is missing (build first: scripts/build.sh)" >&2; exit 2; }
done
if ! grep -q '^ID=debian' /etc/os-release || ! grep -q '^VERSION_ID="12"' /etc/os-release; then
  echo "error: the images are Debian 12; binaries built on $(grep -h ^PRETTY_NAME= /etc/os-release | cut -d= -f2) would not load there" >&2
  exit 2
fi
for f in "${files[@]}"; do
  mkdir -p "$out/$(dirname "$f")"
  cp -f "$build/$f" "$out/$f"
done
# The commit of the sources the build tree was configured from (not necessarily this checkout).
src="$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt" 2>/dev/null)"
src="${src:-.}"
commit="$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty=""
git -C "$src" diff --quiet HEAD -- 2>/dev/null || dirty=" (with uncommitted changes)"
echo "built from $commit$dirty in $build" > "$out/SOURCE"
echo "staged ${#files[@]} binaries from $build ($commit$dirty) in $out"
