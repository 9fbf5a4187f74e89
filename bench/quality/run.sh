#!/bin/sh
# The quality experiment of docs/results.md, end to end: the training runs of one profile of
# bench/quality/run.py on the C4 sample (two at a time, one core each), which write the compact
# results bench/quality/results/<profile>.json (committed), then the plots and the tables from that
# file alone (bench/quality/results/<profile>.md).
#
#   RELORA_BUILD_DIR=build bench/quality/run.sh [run.py options, e.g. --jobs 1]
#   RELORA_BUILD_DIR=build RELORA_QUALITY_PROFILE=full bench/quality/run.sh
#
# The `tpp80` profile (the default; 15 runs of about 5.5 minutes, two at a time: 45-50 minutes on
# the 2-core build machine) writes docs/results/tpp80_{loss_curves,lr_schedule,update_spectrum}.png;
# the `full` profile (16 runs, about 22 minutes) writes docs/results/{loss_curves,...}.png, any
# other profile docs/results/<profile>_*.png.
#
# Only the plots and tables, from the committed file (no training, no worker, no data):
#   /usr/bin/python3 bench/quality/report.py --results bench/quality/results/tpp80.json
#
# Needs a built relora-worker (cmake --build $RELORA_BUILD_DIR --target relora-worker), the C4 sample
# in ../shared/data (or RELORA_SHARED_DATA), and Debian's python3-matplotlib (scripts/setup.sh).
set -eu
cd "$(dirname "$0")/../.."
profile="${RELORA_QUALITY_PROFILE:-tpp80}"
prefix=""
[ "$profile" = full ] || prefix="${profile}_"
compact="bench/quality/results/$profile.json"
python3 bench/quality/run.py --profile "$profile" --compact "$compact" "$@"
/usr/bin/python3 bench/quality/report.py --results "$compact" --img-dir docs/results --prefix "$prefix"
