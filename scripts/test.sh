#!/usr/bin/env bash
# Installs, builds and runs the default test suite (labels unit and integration; about 10 minutes
# on 2 cores). Longer suites carry the label "long": run them with `scripts/test.sh -L long`.
# Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd build
if [ "$#" -eq 0 ]; then set -- -LE long; fi
ctest --output-on-failure --timeout 900 -j "${RELORA_TEST_JOBS:-2}" "$@"
