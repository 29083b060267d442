#!/usr/bin/env bash
# Longer crash trials than CI runs: the SIGKILL test with more kills, over
# several trials, against the local broker (started here if needed).
#   scripts/crash_trials.sh [TRIALS] [KILLS_PER_TRIAL]     (default 5 x 40)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tierstream/target}"
trials="${1:-5}"
export TIERSTREAM_KILLS="${2:-40}"
if ! scripts/kafka.sh status >/dev/null 2>&1; then
  scripts/kafka.sh start
  trap 'scripts/kafka.sh stop' EXIT
fi
for i in $(seq 1 "$trials"); do
  echo "== trial $i/$trials: $TIERSTREAM_KILLS kills"
  TIERSTREAM_KILL_SEED="$RANDOM" cargo test --release --locked --test exactly_once sigkill -- --nocapture 2>&1 \
    | grep -E "kills|committed outputs|test result|panicked|differ"
done
