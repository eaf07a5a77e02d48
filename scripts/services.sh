#!/usr/bin/env bash
# Real Redis and RabbitMQ on 127.0.0.1 for tests, benchmarks and CI.
#
#   scripts/services.sh start              install when missing, start all, wait until they answer
#   scripts/services.sh stop               stop all, leave no process behind
#   scripts/services.sh restart redis|rabbitmq
#   scripts/services.sh status
#
# Besides Redis and RabbitMQ, a Redis Sentinel (redis-server --sentinel) on
# $SENTINEL_PORT (default 26379) monitors the Redis as master `taskqueue`,
# for `redis.mode: sentinel`.
#
# Data lives in a throwaway directory ($TASKQUEUE_SERVICES_DIR, default
# .services/ in the repo), wiped on start, so nothing survives a previous run.
# Needs root (apt-get, the rabbitmq user); no systemd.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${TASKQUEUE_SERVICES_DIR:-$here/.services}
redis_port=${REDIS_PORT:-6379}
rabbit_env=/etc/rabbitmq/rabbitmq-env.conf
ctl=/usr/sbin/rabbitmqctl

log() { printf '[services] %s\n' "$*" >&2; }

install_missing() {
  local need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  [ -x /usr/sbin/rabbitmq-server ] || need+=(rabbitmq-server)
  # libfaketime: the fault suite runs a replica with its clock ahead
  command -v faketime >/dev/null 2>&1 || need+=(faketime)
  # chromium + chromedriver: the dashboard's browser test (tests/ui_browser.rs)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
  # OpenSSL headers + pkg-config: the build links the system libssl (TLS of
  # the AMQP and HTTP clients)
  dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
  command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d keeps the packages' init scripts from starting services on install
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
}

redis_up() { redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; }

start_redis() {
  if redis_up; then log "redis already answering on $redis_port"; return; fi
  rm -rf "$dir/redis" && mkdir -p "$dir/redis"
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir/redis" \
    --save '' --appendonly no --daemonize yes --pidfile "$dir/redis/redis.pid" \
    --logfile "$dir/redis/redis.log" --protected-mode yes
  for _ in $(seq 1 100); do redis_up && { log "redis up on 127.0.0.1:$redis_port"; return; }; sleep 0.1; done
  log "redis did not answer"; cat "$dir/redis/redis.log" >&2 || true; return 1
}

stop_redis() {
  if redis_up; then redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true; fi
  for _ in $(seq 1 50); do redis_up || break; sleep 0.1; done
  pkill -f "redis-server 127.0.0.1:$redis_port" 2>/dev/null || true
}

# --- Redis Sentinel: monitors the Redis above as master "taskqueue" ----------
sentinel_port=${SENTINEL_PORT:-26379}
sentinel_master=${SENTINEL_MASTER:-taskqueue}

sentinel_up() {
  redis-cli -h 127.0.0.1 -p "$sentinel_port" sentinel get-master-addr-by-name "$sentinel_master" 2>/dev/null \
    | grep -q .
}

start_sentinel() {
  if sentinel_up; then log "sentinel already answering on $sentinel_port"; return; fi
  rm -rf "$dir/sentinel" && mkdir -p "$dir/sentinel"
  # Sentinel rewrites its configuration file, so it gets one of its own.
  cat > "$dir/sentinel/sentinel.conf" <<CONF
bind 127.0.0.1
port $sentinel_port
daemonize yes
pidfile $dir/sentinel/sentinel.pid
logfile $dir/sentinel/sentinel.log
dir $dir/sentinel
sentinel monitor $sentinel_master 127.0.0.1 $redis_port 1
sentinel down-after-milliseconds $sentinel_master 5000
CONF
  redis-server "$dir/sentinel/sentinel.conf" --sentinel
  for _ in $(seq 1 100); do sentinel_up && { log "sentinel up on 127.0.0.1:$sentinel_port (master $sentinel_master)"; return; }; sleep 0.1; done
  log "sentinel did not answer"; cat "$dir/sentinel/sentinel.log" >&2 || true; return 1
}

stop_sentinel() {
  redis-cli -h 127.0.0.1 -p "$sentinel_port" shutdown nosave >/dev/null 2>&1 || true
  for _ in $(seq 1 50); do sentinel_up || break; sleep 0.1; done
}

sentinel_status() {
  if sentinel_up; then echo "sentinel: up (127.0.0.1:$sentinel_port, master $sentinel_master)"; else echo "sentinel: down"; fi
}
# -----------------------------------------------------------------------------

write_rabbit_env() {
  mkdir -p "$dir/rabbitmq"
  chown -R rabbitmq:rabbitmq "$dir/rabbitmq"
  cat > "$rabbit_env" <<CONF
# Written by taskqueue's scripts/services.sh: loopback only, throwaway data.
NODENAME=rabbit@localhost
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=5672
MNESIA_BASE=$dir/rabbitmq/mnesia
LOG_BASE=$dir/rabbitmq/log
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
CONF
}

rabbit_up() { "$ctl" -q await_startup >/dev/null 2>&1; }

start_epmd() {
  # Started first, by hand, so it listens on loopback only.
  pgrep -x epmd >/dev/null 2>&1 || epmd -address 127.0.0.1 -daemon
}

start_rabbit() {
  start_epmd
  if [ -f "$rabbit_env" ] && grep -q "taskqueue" "$rabbit_env" && rabbit_up; then
    log "rabbitmq already running"; return
  fi
  rm -rf "$dir/rabbitmq"
  write_rabbit_env
  boot_rabbit
}

boot_rabbit() {
  start_epmd
  su rabbitmq -s /bin/sh -c "HOME=/var/lib/rabbitmq /usr/sbin/rabbitmq-server > $dir/rabbitmq/console.log 2>&1 &"
  for _ in $(seq 1 120); do
    if rabbit_up; then log "rabbitmq up on 127.0.0.1:5672"; return; fi
    sleep 0.5
  done
  log "rabbitmq did not start"; tail -50 "$dir/rabbitmq/console.log" >&2 || true; return 1
}

stop_rabbit() {
  if [ -f "$rabbit_env" ] && grep -q taskqueue "$rabbit_env"; then
    "$ctl" -q stop >/dev/null 2>&1 || true
  fi
  for _ in $(seq 1 60); do pgrep -u rabbitmq -f beam >/dev/null 2>&1 || break; sleep 0.5; done
  pkill -u rabbitmq -f beam 2>/dev/null || true
  pkill -u rabbitmq -f inet_gethost 2>/dev/null || true
  pkill -u rabbitmq -f erl_child_setup 2>/dev/null || true
  epmd -kill >/dev/null 2>&1 || true
}

restart_rabbit() {
  # Keeps data (durable queues and persistent messages survive), like a real broker restart.
  "$ctl" -q stop >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do pgrep -u rabbitmq -f beam >/dev/null 2>&1 || break; sleep 0.5; done
  boot_rabbit
}

status() {
  if redis_up; then echo "redis: up (127.0.0.1:$redis_port)"; else echo "redis: down"; fi
  if rabbit_up; then echo "rabbitmq: up (127.0.0.1:5672)"; else echo "rabbitmq: down"; fi
}

case "${1:-}" in
  start) install_missing; start_redis; start_sentinel; start_rabbit ;;
  stop) stop_sentinel; stop_redis; stop_rabbit; log "stopped" ;;
  restart)
    case "${2:-}" in
      redis) stop_redis; mkdir -p "$dir/redis"; redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir/redis" --save '' --appendonly no --daemonize yes --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log"
             for _ in $(seq 1 100); do redis_up && break; sleep 0.1; done; log "redis restarted" ;;
      rabbitmq) restart_rabbit ;;
      *) echo "usage: $0 restart redis|rabbitmq" >&2; exit 2 ;;
    esac ;;
  status) status; sentinel_status ;;
  *) echo "usage: $0 start|stop|restart <redis|rabbitmq>|status" >&2; exit 2 ;;
esac
