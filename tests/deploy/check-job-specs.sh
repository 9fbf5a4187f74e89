#!/usr/bin/env bash
# The example job files of deploy/compose/jobs are valid job specs: the relora CLI checks a
# spec before it submits it (exit 2 on a bad spec); pointed at a port where nothing listens,
# a valid spec gets as far as the connection (exit 3: coordinator unreachable).
# Usage: check-job-specs.sh SOURCE_DIR BIN_DIR [BIN_DIR...]
set -uo pipefail
src="$1"
shift
cli=""
for dir in "$@"; do
  if [ -x "$dir/client/relora" ]; then cli="$dir/client/relora"; break; fi
done
if [ -z "$cli" ]; then
  echo "relora CLI not built in $*: skipped"
  exit 77
fi
passed=0
failed=0
for job in "$src"/deploy/compose/jobs/*.yaml; do
  out="$("$cli" --coordinator 127.0.0.1:1 --timeout 2s submit "$job" 2>&1)"
  rc=$?
  if [ "$rc" -eq 3 ]; then
    echo "ok   ${job#"$src"/}: a valid spec"
    passed=$((passed + 1))
  else
    echo "FAIL ${job#"$src"/}: exit $rc: $out"
    failed=$((failed + 1))
  fi
done
echo "check-job-specs: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
