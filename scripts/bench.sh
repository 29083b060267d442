#!/usr/bin/env bash
# The benchmark anyone can run: a heavy-tailed workload (`generate
# --profile heavy-tailed`: Zipf activity, 10 events per customer on
# average, two years of event time, all in the past) through `replay` on
# one thread and on every core, then through `run` end to end with exactly
# once on the local broker (three input topics), printing events/s, CPU
# seconds and peak RSS of each.
#   scripts/bench.sh [BINARY]
#   env: SIZES="1000000 10000000"  events per replay workload
#        KAFKA_EVENTS=1000000       events of the end-to-end run (0: skip it)
#        LATENCY_RATE=75000         events/s of the steady stream whose
#                                   event-to-commit latency is measured
#                                   (0: skip it; 75 000 is half the target
#                                   throughput of 150 000)
#        PARTITIONS=4 SEED=7 DAYS=730 START=2024-09-01
# Needs /usr/bin/time (Debian package `time`) and, for the end-to-end run,
# a running broker (scripts/kafka.sh start). Not a test: these machines are
# shared, so compare figures from one sitting only.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/tierstream/target}/release/tierstream}"
# As the image runs it (deploy/Dockerfile): RocksDB's large glibc blocks
# go back to the kernel when freed.
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-131072}"
sizes="${SIZES:-1000000 10000000}"
partitions="${PARTITIONS:-4}"
cores="$(nproc)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
[ -x /usr/bin/time ] || { echo "bench.sh: needs /usr/bin/time (apt-get install time)"; exit 1; }
echo "machine: $cores cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); binary $bin"
printf '%-34s %10s %10s %10s %12s\n' workload "wall s" "cpu s" "events/s" "peak RSS MB"
measure() { # label events command...
  local label="$1" events="$2"; shift 2
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" > /dev/null 2> "$work/err" || {
    cat "$work/err" >&2; exit 1; }
  read -r wall user sys rss < "$work/time"
  awk -v l="$label" -v n="$events" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" \
    'BEGIN { printf "%-34s %10.1f %10.1f %10.0f %12.0f\n", l, w, u + s, n / (w > 0 ? w : 0.01), r / 1024 }'
}
for events in $sizes; do
  customers=$((events / 10))
  "$bin" generate --profile heavy-tailed --customers "$customers" --events "$events" \
    --seed "${SEED:-7}" --days "${DAYS:-730}" --start "${START:-2024-09-01}" \
    --output "$work/events.jsonl" 2> /dev/null
  for threads in 1 "$cores"; do
    rm -rf "$work/state"
    measure "replay ${events} ev, $threads thread(s)" "$events" \
      "$bin" replay --input "$work/events.jsonl" --output /dev/null \
      --state-dir "$work/state" --partitions "$partitions" --threads "$threads"
  done
  rm -f "$work/events.jsonl"
done
kafka_events="${KAFKA_EVENTS:-1000000}"
if [ "$kafka_events" -gt 0 ]; then
  echo "run, exactly once, 3 input topics, ${kafka_events} events from a backlog (scripts/backlog_bench.sh):"
  PROFILE=heavy-tailed scripts/backlog_bench.sh "$bin" $((kafka_events / 10)) "$kafka_events"
fi
latency_rate="${LATENCY_RATE:-75000}"
if [ "$kafka_events" -gt 0 ] && [ "$latency_rate" -gt 0 ]; then
  echo "run, exactly once, a steady ${latency_rate} events/s (scripts/latency_bench.sh):"
  PROFILE=heavy-tailed scripts/latency_bench.sh "$bin" "$latency_rate" "$kafka_events"
fi
