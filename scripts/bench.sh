#!/usr/bin/env bash
# Every benchmark, then docs/performance.md from their figures (bench/report.py).
#
#   scripts/bench.sh            full sizes (about 40 minutes on 2 cores: deep_queue.py alone 20)
#   scripts/bench.sh --quick    smaller sizes, same figures (about 10 minutes)
#
# bench/chaos.py waits up to 3 minutes after its last fault for the jobs to finish, and exits 1
# on a loss or a duplicate (then it is named as failed here).
# Each bench/*.py prints its table (figure, measured, target, pass/MISS) and keeps its figures
# in $BENCH_RESULTS for the report. The Slurm benchmark starts the project's one-node Slurm
# (scripts/slurm.sh start: needs root the first time, to install it). A benchmark that fails to
# run is named in the report; the others still run. Exit status 1 if any failed to run.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
quick=()
[ "${1:-}" = --quick ] && quick=(--quick)
export BENCH_RESULTS
BENCH_RESULTS=$(mktemp -d "${TMPDIR:-/tmp}/edgecelery-bench.XXXXXX")
py=.venv/bin/python
failed=()
run() {
  echo "== $*"
  "$py" "$@" "${quick[@]}" || failed+=("$(basename "$1") ${*:2}")
}
run bench/throughput.py --scheduler local
run bench/throughput.py --scheduler instant
run bench/latency.py
run bench/scheduler_load.py --subjobs 1000
run bench/scheduler_load.py --subjobs 10000 --minutes 1.1
run bench/deep_queue.py
run bench/db_scale.py
run bench/intake.py --consumers 1
run bench/intake.py --consumers 2
run bench/slurm.py
run bench/slurm.py --pilots --psij
run bench/profiles.py
run bench/chaos.py
missing=$(IFS=,; echo "${failed[*]:-}")
"$py" bench/report.py "$BENCH_RESULTS" --command "scripts/bench.sh ${quick[*]:-}" \
  --missing "$missing"
[ ${#failed[@]} -eq 0 ]
