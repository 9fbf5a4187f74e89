#!/usr/bin/env bash
# Installs, builds and runs the default test suite (labels unit and integration; about 10 minutes
# on 2 cores). Longer suites carry the label "long": run them with `scripts/test.sh -L long`.
# Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
if [ "$#" -eq 0 ]; then
  # The default suite includes the fuzz targets (label fuzz), built with clang in build-fuzz.
  # Built here, before ctest, so the compile does not compete with running tests; their ctest
  # fixture (fuzz_build) then finds them current, and builds them itself for other selections.
  # A failure here is reported by that fixture test; the rest of the suite still runs.
  bash scripts/fuzz-build.sh || echo "relora fuzz: build failed (ctest's fuzz_build shows why)" >&2
  set -- -LE long
fi
cd build
ctest --output-on-failure --timeout 900 -j "${RELORA_TEST_JOBS:-2}" "$@"
