#!/usr/bin/env bash
# End to end on a local broker: installs what is missing, starts Kafka,
# builds tierstream, produces a synthetic workload, runs the pipeline until
# it has caught up, and prints some tier changes and counts.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tierstream/target}"
CUSTOMERS="${CUSTOMERS:-2000}"
EVENTS="${EVENTS:-40000}"
scripts/setup.sh
scripts/kafka.sh start
echo "== building (the first build compiles RocksDB and librdkafka: ~20 minutes on 2 cores)"
cargo build --release --locked
bin="$CARGO_TARGET_DIR/release/tierstream"

run_id="demo-$(date +%s)"
work="$(mktemp -d)"
pipeline=""
trap 'if [ -n "$pipeline" ]; then kill "$pipeline" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
cat > "$work/demo.toml" <<TOML
[kafka]
group_id = "$run_id"
input_topics = ["$run_id-purchases", "$run_id-complaints", "$run_id-service-events"]
tier_topic = "$run_id-tier-changes"
warning_topic = "$run_id-churn-warnings"
dlq_topic = "$run_id-dlq"
[state]
dir = "$work/state"
TOML

echo "== producing $EVENTS events for $CUSTOMERS customers"
"$bin" generate --customers "$CUSTOMERS" --events "$EVENTS" --seed 42 --to-kafka --config "$work/demo.toml"
echo "== running the pipeline"
"$bin" run --config "$work/demo.toml" &
pipeline=$!
# Wait until the output topic stops growing, then stop the pipeline gracefully.
prev=-1
while true; do
  sleep 5
  n=$("$bin" tail --config "$work/demo.toml" --idle-ms 3000 --count-only 2>&1 | awk '{s+=$NF} END {print s+0}')
  echo "   outputs so far: $n"
  [ "$n" -gt 0 ] && [ "$n" -eq "$prev" ] && break
  prev=$n
done
kill -TERM "$pipeline"; wait "$pipeline" || true
pipeline=""
echo "== some tier changes (customer, from -> to, direction, value_12m)"
"$bin" tail --config "$work/demo.toml" --idle-ms 3000 2>/dev/null \
  | python3 "$(dirname "$0")/show_changes.py"
echo "== counts by topic and schema"
"$bin" tail --config "$work/demo.toml" --idle-ms 3000 --count-only
