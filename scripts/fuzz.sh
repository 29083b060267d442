#!/usr/bin/env bash
# Fuzzes the input decoder for MINUTES (default 10): runs the property
# tests of tests/decoder_fuzz.rs (arbitrary bytes, and valid events of every
# type mutated byte by byte) round after round, each round with fresh random
# cases (PROPTEST_CASES per property, default 1000000: a few seconds a
# round), until the time is up.
# A failure stops at once; proptest shrinks it and keeps the case in
# proptest-regressions/decoder_fuzz.txt, which CI then replays every run.
#   scripts/fuzz.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tierstream/target}"
minutes="${1:-10}"
export PROPTEST_CASES="${PROPTEST_CASES:-1000000}"
cargo test --release --locked --test decoder_fuzz --no-run
deadline=$(( $(date +%s) + minutes * 60 ))
round=0
while [ "$(date +%s)" -lt "$deadline" ]; do
  round=$((round + 1))
  echo "fuzz.sh: round $round ($PROPTEST_CASES cases per property)"
  cargo test --release --locked --test decoder_fuzz -q -- --test-threads 2
done
echo "fuzz.sh: $round rounds in $minutes minutes, no failure"
