#!/usr/bin/env bash
# Recovery after a crash, measured: SIGKILL mid-stream and an immediate
# restart, KILLS times (default 20), with the product's default group
# settings, against the local broker (started here if needed). Prints each
# restart's time to its first new committed output and the distribution;
# the committed outputs are then compared with an uninterrupted replay.
#   scripts/recovery_trials.sh [KILLS]
# With TIERSTREAM_KAFKA__STATIC_MEMBERSHIP=false in the environment the
# instances join as dynamic members: the baseline (each restart then waits
# for the dead member's session to time out, and the test's membership
# check fails at the first kill, after printing its time).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tierstream/target}"
export TIERSTREAM_RECOVERY_KILLS="${1:-20}"
if ! scripts/kafka.sh status >/dev/null 2>&1; then
  scripts/kafka.sh start
  trap 'scripts/kafka.sh stop' EXIT
fi
cargo test --release --locked --test recovery same_member -- --nocapture 2>&1 \
  | grep -E "^kill |restart to first|test result|panicked|differ"
