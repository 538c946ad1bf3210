#!/usr/bin/env bash
# Runs spec/c/threads.c under ThreadSanitizer against a sandbox and counts the reports (`make tsan`):
#   run-tsan.sh HOST TIMEOUT_SECONDS SCRIPT CPATH REQUESTS_PER_THREAD
# Exits 1 on any report, on a failed thread, or when the run passes TIMEOUT_SECONDS.
set -uo pipefail
host=$1 limit=$2 script=$3 cpath=$4 requests=$5
root=$(cd "$(dirname "$0")/../.." && pwd)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
run() {
  SANDBOX_ARGS="--quiet --count 30 --odata-page-size 10" \
  TSAN_OPTIONS="halt_on_error=0 exitcode=66 second_deadlock_stack=1 history_size=4" \
    timeout "$limit" "$root/bin/with-sandbox" "$@" "$host" "$script" "$cpath" "$requests" >"$log" 2>&1
}
run
rc=$?
# clang 14's TSan cannot map its shadow under a kernel with more ASLR bits (vm.mmap_rnd_bits > 28):
# then once more with address randomisation off for the host
if grep -q 'ThreadSanitizer: unexpected memory mapping' "$log"; then
  echo "tsan: TSan cannot start with this kernel's ASLR: again under setarch -R"
  run setarch "$(uname -m)" -R
  rc=$?
fi
reports=$(grep -c '^WARNING: ThreadSanitizer' "$log")
grep '^tsan: ' "$log"
if [ "$reports" -gt 0 ]; then
  # each report: its title, the two accesses and where the memory is
  grep -E '^WARNING: ThreadSanitizer|^  (Write|Read|Atomic|Previous|Mutex|Location|Thread T)|^    #[0-4] |^SUMMARY: ThreadSanitizer' "$log" | head -n 80
fi
[ "$rc" = 124 ] && echo "tsan: FAILED: the run passed the time limit of $limit s"
echo "tsan: exit $rc after $(( $(date +%s) - start )) s; findings (ThreadSanitizer reports): $reports"
[ "$rc" = 0 ] && [ "$reports" = 0 ]
