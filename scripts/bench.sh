#!/usr/bin/env bash
# The workload benchmarks in one command: installs what they need (the
# BullMQ peers' npm packages under benches/bullmq), starts Redis and
# RabbitMQ (scripts/services.sh), builds the release binary and the
# benches, and runs the chosen workloads, printing one table per workload
# (progress on stderr).
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

chosen=()
for workload in "${workloads[@]}"; do
  if [ "$workload" = w2 ] && [ ! -f benches/execution.rs ]; then
    log "w2: benches/execution.rs is not in this tree; skipped"
  else
    chosen+=("$workload")
  fi
done
[ ${#chosen[@]} -gt 0 ] || exit 0
workloads=("${chosen[@]}")

case " ${workloads[*]} " in *" w1 "*|*" w2 "*) install_bullmq ;; esac
scripts/services.sh start

bench_of() {
  case "$1" in
    w1) echo fanout ;;
    w2) echo execution ;;
    w3) echo ratelimit ;;
    w4) echo spread ;;
    memory) echo memory ;;
  esac
}

# One build of everything chosen (the benches and the taskqueue binary
# they start), so no build runs between workloads.
build=()
for workload in "${workloads[@]}"; do build+=(--bench "$(bench_of "$workload")"); done
log "building the release binary and the benches"
cargo bench --no-run "${build[@]}"

for workload in "${workloads[@]}"; do
  bench=$(bench_of "$workload")
  log "running $workload (cargo bench --bench $bench)"
  cargo bench --bench "$bench" -- "${extra[@]}"
done
