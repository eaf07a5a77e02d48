#!/usr/bin/env bash
# The workload benchmarks in one command: installs what they need (the
# BullMQ peers' npm packages under benches/bullmq), starts Redis and
# RabbitMQ (scripts/services.sh), builds the release binaries and runs the
# chosen workloads, printing one table per workload (progress on stderr).
#
#   scripts/bench.sh [w1|w2|w3|w4|memory|all]... [-- ARGS]
#
#   w1      fan-out: bare lapin, BullMQ addBulk, immediate trigger, spread planning
#   w2      execution: cargo bench --bench execution
#   w3      rate-limit accuracy over 3 workers
#   w4      spread over a 60 s window: per-second evenness, lateness
#   memory  Redis bytes per user, worker RSS over 1,000,000 jobs
#   all     every one of them, in that order (the default)
#
# ARGS after `--` go to every workload: --runs N, --size N, --tiny.
# BENCH_RUNS and BENCH_SIZE do the same through the environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

workloads=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; extra=("$@"); break ;;
    w1|w2|w3|w4|memory) workloads+=("$1") ;;
    all) workloads+=(w1 w2 w3 w4 memory) ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown workload: $1 (w1|w2|w3|w4|memory|all)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#workloads[@]} -gt 0 ] || workloads=(w1 w2 w3 w4 memory)

log() { printf '[bench] %s\n' "$*" >&2; }

install_bullmq() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "node/npm missing: installing Debian's nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  if [ ! -d benches/bullmq/node_modules/bullmq ]; then
    log "installing the BullMQ peers (npm ci in benches/bullmq)"
    (cd benches/bullmq && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

case " ${workloads[*]} " in *" w1 "*|*" w2 "*) install_bullmq ;; esac
scripts/services.sh start
log "building the release binaries"
cargo build --release --bin taskqueue

for workload in "${workloads[@]}"; do
  case "$workload" in
    w1) bench=fanout ;;
    w2) bench=execution ;;
    w3) bench=ratelimit ;;
    w4) bench=spread ;;
    memory) bench=memory ;;
  esac
  log "running $workload (cargo bench --bench $bench)"
  cargo bench --bench "$bench" -- "${extra[@]}"
done
