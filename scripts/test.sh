#!/usr/bin/env bash
# Runs every test against real Redis and RabbitMQ on loopback.
# Starts (and, when missing, installs) both servers first; leaves them running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/services.sh start
exec cargo test --workspace "$@"
