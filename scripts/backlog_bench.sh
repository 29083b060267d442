#!/usr/bin/env bash
# A three-topic backlog end to end: produces a generated workload to fresh
# topics, runs the pipeline over it until idle, and prints the output
# counts of `run` and of `replay --partitions N` side by side (checking
# every output field by field) with the end-to-end throughput, and the
# speed of a full restore from the changelog (state directory wiped).
#   scripts/backlog_bench.sh [BINARY] [CUSTOMERS] [EVENTS]   (env SEED, DAYS, START, PROFILE, KAFKA_SETTINGS)
# Needs a running broker (scripts/kafka.sh start).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/tierstream/target}/release/tierstream}"
customers="${2:-100000}"
events="${3:-1000000}"
run_id="bench-$(date +%s)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
. scripts/run_config.sh
write_run_config "$run_id" "$work/bench.toml" "$work/state"
# The default start keeps every event in the past: input more than a day
# ahead of the wall clock is rejected (SPEC), so a workload reaching into
# the future would give run and the later replay different inputs.
workload=(--customers "$customers" --events "$events" --seed "${SEED:-7}" --days "${DAYS:-730}" --start "${START:-2024-09-01}" --profile "${PROFILE:-standard}")
"$bin" generate "${workload[@]}" --to-kafka --config "$work/bench.toml"
RUST_LOG=info /usr/bin/time -f "run: %e s wall, %M KiB max RSS" \
  "$bin" run --config "$work/bench.toml" --stop-when-idle-ms 5000 2> "$work/run.log" || {
  cat "$work/run.log" >&2; exit 1; }
grep -E "throughput|max RSS" "$work/run.log" | sed 's/\x1b\[[0-9;]*m//g'
# Restore: with the state directory gone, a second run rebuilds every task
# from the changelog before it goes idle (nothing new to process).
rm -rf "$work/state"
RUST_LOG=info "$bin" run --config "$work/bench.toml" --stop-when-idle-ms 3000 2> "$work/restore.log" || {
  cat "$work/restore.log" >&2; exit 1; }
grep -E "restored state from the changelog" "$work/restore.log" | sed 's/\x1b\[[0-9;]*m//g'
"$bin" tail --config "$work/bench.toml" --idle-ms 5000 > "$work/kafka.jsonl" 2>/dev/null
"$bin" generate "${workload[@]}" --output "$work/events.jsonl" 2>/dev/null
"$bin" replay --config "$work/bench.toml" --input "$work/events.jsonl" \
  --output "$work/replay.jsonl" --partitions "$RUN_PARTITIONS" 2>/dev/null
python3 scripts/compare_outputs.py "$work/kafka.jsonl" "$work/replay.jsonl" || true
