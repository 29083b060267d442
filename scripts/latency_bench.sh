#!/usr/bin/env bash
# Event-to-commit latency of a steady stream: starts the pipeline (exactly
# once) on fresh topics, then produces a generated workload to them at a
# fixed rate (`generate --to-kafka --rate`), and prints the run's
# throughput and the bucket bounds of its median and 99th percentile
# latency (from an input record's Kafka timestamp to the commit of its
# batch; the histogram's buckets are 25–100 ms apart there).
#   scripts/latency_bench.sh [BINARY] [RATE] [EVENTS]   (env SEED, DAYS=20, START, PROFILE, KAFKA_SETTINGS)
# Needs a running broker (scripts/kafka.sh start) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/tierstream/target}/release/tierstream}"
rate="${2:-75000}"
events="${3:-1000000}"
run_id="latency-$(date +%s)"
work="$(mktemp -d)"
. scripts/run_config.sh
write_run_config "$run_id" "$work/bench.toml" "$work/state"
RUST_LOG=info "$bin" run --config "$work/bench.toml" --stop-when-idle-ms 4000 2> "$work/run.log" &
run_pid=$!
trap 'kill "$run_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
# Ready: partitions assigned and restored (nothing to restore here).
for _ in $(seq 300); do
  curl -sf http://127.0.0.1:9898/health/ready > /dev/null && break
  kill -0 "$run_pid" 2>/dev/null || { cat "$work/run.log" >&2; exit 1; }
  sleep 0.2
done
# Twenty days of event time, ending ten days ago: a stream, not a history.
# Two years squeezed into a few seconds of wall time would put a month
# close (every customer visited) every second, which no stream has.
"$bin" generate --customers $((events / 10)) --events "$events" --seed "${SEED:-7}" \
  --days "${DAYS:-20}" --start "${START:-$(date -u -d '30 days ago' +%F)}" \
  --profile "${PROFILE:-heavy-tailed}" \
  --to-kafka --rate "$rate" --config "$work/bench.toml" 2>&1 | tail -1
wait "$run_pid" || { cat "$work/run.log" >&2; exit 1; }
grep -E "throughput" "$work/run.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -o "records=.*"
