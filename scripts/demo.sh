#!/usr/bin/env bash
# End to end on a local broker: installs what is missing, starts Kafka,
# builds tierstream, produces a synthetic workload, runs the pipeline until
# it has caught up, prints some tier changes and counts, and checks the
# committed outputs against `tierstream replay` of the same workload.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tierstream/target}"
CUSTOMERS="${CUSTOMERS:-2000}"
EVENTS="${EVENTS:-40000}"
SEED="${SEED:-42}"
scripts/setup.sh
scripts/kafka.sh start
echo "== building (the first build compiles RocksDB and librdkafka: ~25 minutes on 2 cores)"
cargo build --release --locked
bin="$CARGO_TARGET_DIR/release/tierstream"

run_id="demo-$(date +%s)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
. scripts/run_config.sh
write_run_config "$run_id" "$work/demo.toml" "$work/state"

workload=(--customers "$CUSTOMERS" --events "$EVENTS" --seed "$SEED")
echo "== producing $EVENTS events for $CUSTOMERS customers"
"$bin" generate "${workload[@]}" --to-kafka --config "$work/demo.toml"
echo "== running the pipeline until it has caught up (5 s without input)"
# The pipeline stops by itself once idle; if it dies or hangs, so does the demo.
status=0
timeout 900 "$bin" run --config "$work/demo.toml" --stop-when-idle-ms 5000 || status=$?
if [ "$status" -ne 0 ]; then
  echo "demo: the pipeline failed (exit status $status); see its log above" >&2
  exit 1
fi
"$bin" tail --config "$work/demo.toml" --idle-ms 3000 > "$work/kafka.jsonl" 2>/dev/null
echo "== some tier changes (customer, from -> to, direction, value_12m)"
python3 scripts/show_changes.py < "$work/kafka.jsonl"
echo "== counts by topic and schema"
"$bin" tail --config "$work/demo.toml" --idle-ms 3000 --count-only
echo "== the same workload through tierstream replay ($RUN_PARTITIONS tasks, no Kafka)"
"$bin" generate "${workload[@]}" --output "$work/events.jsonl" 2>/dev/null
"$bin" replay --config "$work/demo.toml" --input "$work/events.jsonl" \
  --output "$work/replay.jsonl" --partitions "$RUN_PARTITIONS" --memory 2>/dev/null
python3 scripts/compare_outputs.py "$work/kafka.jsonl" "$work/replay.jsonl"
