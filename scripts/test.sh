#!/usr/bin/env bash
# Runs every test against real Redis and RabbitMQ on loopback, then the
# multi-process cluster smoke (scripts/cluster.sh), then the
# workload benchmarks at a tiny size (counts only, never timings).
# Starts (and, when missing, installs) both servers first; leaves them running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/services.sh start
cargo test --workspace "$@"

# The compose topology as processes (scheduler, two workers, demo sink): a
# fan-out of 2000 users, each called once, both workers working.
# When the binary is still being built (.ci/run builds the image's release
# binary beside the tests), wait for it: its build holds this lock.
if [ -n "${TASKQUEUE_CLUSTER_BIN_LOCK:-}" ]; then
  echo "[test] waiting for ${TASKQUEUE_CLUSTER_BIN} to be built" >&2
  flock "$TASKQUEUE_CLUSTER_BIN_LOCK" true
  if [ ! -x "${TASKQUEUE_CLUSTER_BIN:-}" ]; then
    echo "[test] the cluster binary was not built; its log:" >&2
    tail -n 50 "$(dirname "$TASKQUEUE_CLUSTER_BIN")/image-build.log" >&2 || true
    exit 1
  fi
fi
TASKQUEUE_BIN="${TASKQUEUE_CLUSTER_BIN:-$PWD/target/debug/taskqueue}" TASKQUEUE_CLUSTER_NAME="cluster_ci_$$" \
  TASKQUEUE_CLUSTER_DIR="${TMPDIR:-/tmp}/taskqueue-cluster-$$" scripts/cluster.sh smoke

# The BullMQ peer of W1 runs when its npm packages can be installed.
if [ ! -d benches/bullmq/node_modules/bullmq ] && command -v npm >/dev/null 2>&1; then
  (cd benches/bullmq && npm ci --no-audit --no-fund --loglevel=error) \
    || echo "[test] npm ci failed; the BullMQ row of the tiny W1 run is skipped" >&2
fi
for bench in execution fanout ratelimit spread memory zones; do
  cargo bench --profile dev --bench "$bench" -- --tiny
done
