#!/usr/bin/env bash
# Runs the libFuzzer harness for a bounded time and sums it up (used by `make fuzz`):
#   run-fuzz.sh BINARY SECONDS WORK_CORPUS SEED_CORPUS ARTIFACT_DIR
# New inputs go to WORK_CORPUS (the seeds stay as they are); a finding is written to ARTIFACT_DIR.
# Prints the executions, the coverage and the findings; exits 1 on any finding.
set -uo pipefail
bin=$1 seconds=$2 work=$3 seeds=$4 artifacts=$5
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
# -max_total_time bounds the fuzzing, -timeout one input; `timeout` is the backstop for the rest
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 timeout $((seconds + 120)) \
  "$bin" -max_total_time="$seconds" -timeout=10 -max_len=8192 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$work" "$seeds" >"$log" 2>&1
rc=$?
elapsed=$(( $(date +%s) - start ))
grep -E '^fuzz: |INITED|^#[0-9]+ +(DONE|pulse)' "$log" | tail -n 4
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
units=$(find "$work" -type f | wc -l)
findings=0
if [ "$rc" != 0 ]; then
  findings=1
  # the harness's or the sanitizer's words first, then the top of the report, then the input
  grep -E '^fuzz: invariant broken|runtime error|^==[0-9]+==ERROR|ERROR: libFuzzer' "$log" | awk '!seen[$0]++' | head -n 3
  grep -E -m 1 -A 24 '^==[0-9]+==ERROR|runtime error' "$log" | grep -E '^ +#' | head -n 16
  grep -E -A 2 '^MS: ' "$log" | tail -n 2
  art=$(sed -n "s/.*Test unit written to \(.*\)$/\1/p" "$log" | tail -n 1)
  [ -n "$art" ] && echo "fuzz: FINDING: input $art; reproduce: $bin $art"
fi
echo "fuzz: ${execs:-?} executions in ${elapsed} s (${cov:-no coverage line}), corpus ${units} inputs + $(ls "$seeds" | wc -l) seeds; findings: $findings"
exit "$findings"
