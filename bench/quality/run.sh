#!/bin/sh
# The quality experiment of docs/results.md, end to end: eight training runs on the C4 sample (two
# at a time, one core each; about 30 minutes on the 2-core build machine), then the plots
# (docs/results/*.png) and the tables (bench/quality/out/full/results.md).
#
#   RELORA_BUILD_DIR=build bench/quality/run.sh [run.py options, e.g. --jobs 1]
#
# Needs a built relora-worker (cmake --build $RELORA_BUILD_DIR --target relora-worker), the C4 sample
# in ../shared/data (or RELORA_SHARED_DATA), and Debian's python3-matplotlib (scripts/setup.sh).
set -eu
cd "$(dirname "$0")/../.."
python3 bench/quality/run.py --profile full "$@"
/usr/bin/python3 bench/quality/report.py --results bench/quality/out/full/results.json --img-dir docs/results
