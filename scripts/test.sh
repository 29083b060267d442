#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit and property tests,
# replay golden tests, and the integration tests against a real local
# Kafka broker (started here if it is not running).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tierstream/target}"
scripts/setup.sh
# promtool, cargo-deny and hadolint, as setup.sh installed them.
export PATH="$HOME/.cache/tierstream/tools/bin:$PATH"
# Start the broker unless it runs already; stop it again if we started it.
if ! scripts/kafka.sh status >/dev/null 2>&1; then
  scripts/kafka.sh start
  trap 'scripts/kafka.sh stop' EXIT
fi
export KAFKA_BOOTSTRAP="${KAFKA_BOOTSTRAP:-127.0.0.1:9092}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== rust-version true to Cargo.lock"
cargo fetch --locked -q
python3 scripts/check_msrv.py
echo "== cargo deny (licenses, bans, sources; advisories when the RustSec database is reachable)"
cargo deny check licenses bans sources 2>&1 | tail -1
if timeout 15 git ls-remote https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
  cargo deny check advisories
else
  echo "RustSec advisory database unreachable from here: advisories not checked"
fi
echo "== bash -n scripts/*.sh .ci/run (syntax of every script, benchmarks included)"
for f in scripts/*.sh .ci/run; do bash -n "$f"; done
echo "== hadolint deploy/Dockerfile"
hadolint deploy/Dockerfile
echo "== cargo clippy"
cargo clippy --release --all-targets --locked -- -D warnings
echo "== cargo test"
# One release build serves the binary, the tests and the benchmarks, so CI
# compiles RocksDB and librdkafka once. Integration tests share one broker:
# they use their own topics and groups, but run one at a time to keep the
# 2-core machine from timing them out.
cargo test --release --locked -- --test-threads="${TEST_THREADS:-2}"
