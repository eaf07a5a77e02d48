#!/usr/bin/env bash
# The compose topology (docker/compose.yaml) as local processes, on the Redis
# and RabbitMQ of scripts/services.sh: one scheduler serving the demo sink,
# two workers.
#
#   scripts/cluster.sh start    start every process, wait until each /health answers
#   scripts/cluster.sh stop     SIGTERM each process (wait for it), drop the cluster's data
#   scripts/cluster.sh status   one line per process: pid, port, /health status
#   scripts/cluster.sh smoke    start, fan out to $TASKQUEUE_CLUSTER_USERS users, check
#                               the sink got each once and both workers worked, stop
#
# Each process runs `taskqueue serve --config config/taskqueue.yaml --role ROLE`,
# the compose command, with the compose environment (TASKQUEUE_API__SINK on
# the scheduler, tasks from config/cluster-tasks.yaml), so the two topologies
# cannot drift. Isolated from other users of the same servers: Redis keys
# under the prefix $TASKQUEUE_CLUSTER_NAME, RabbitMQ vhost of the same name
# (created on start, deleted with the keys on stop).
#
# Settings (environment):
#   TASKQUEUE_CLUSTER_NAME   key prefix and vhost (default taskqueue_cluster)
#   TASKQUEUE_CLUSTER_DIR    state: logs, pid files, token (default .cluster/ in the repo)
#   TASKQUEUE_CLUSTER_PORTS  API ports, scheduler first (default "8180 8181 8182")
#   TASKQUEUE_CLUSTER_USERS  users of the smoke fan-out (default 2000)
#   TASKQUEUE_CLUSTER_WAIT   seconds any one wait may take (default 120)
#   TASKQUEUE_BIN            the binary (default: target/debug/taskqueue, built when missing)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=${TASKQUEUE_CLUSTER_NAME:-taskqueue_cluster}
dir=${TASKQUEUE_CLUSTER_DIR:-$here/.cluster}
read -r -a ports <<< "${TASKQUEUE_CLUSTER_PORTS:-8180 8181 8182}"
users=${TASKQUEUE_CLUSTER_USERS:-2000}
wait_secs=${TASKQUEUE_CLUSTER_WAIT:-120}
bin=${TASKQUEUE_BIN:-$here/target/debug/taskqueue}
ctl=/usr/sbin/rabbitmqctl
task=fanout_demo

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ ${#ports[@]} -eq 3 ] || die "TASKQUEUE_CLUSTER_PORTS needs three ports (scheduler, worker 1, worker 2)"
case "$name" in *[!A-Za-z0-9_-]*|'') die "TASKQUEUE_CLUSTER_NAME: letters, digits, _ and - only" ;; esac

# Process names, their roles and ports, in start order.
procs=(scheduler worker1 worker2)
role_of() { case "$1" in scheduler) echo scheduler ;; *) echo worker ;; esac; }
port_of() { case "$1" in scheduler) echo "${ports[0]}" ;; worker1) echo "${ports[1]}" ;; worker2) echo "${ports[2]}" ;; esac; }
pid_of() { cat "$dir/$1.pid" 2>/dev/null || true; }
alive() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
token() { cat "$dir/token"; }

# Execs "${@:2}" with the environment compose gives every replica, with
# local addresses (call it in a subshell or as a background job).
run_env() {
  local proc=$1 port
  port=$(port_of "$proc")
  exec env TASKQUEUE_REDIS__ADDRESSES=127.0.0.1:6379 \
    TASKQUEUE_REDIS__PREFIX="$name" \
    TASKQUEUE_QUEUE__URL="amqp://guest:guest@127.0.0.1:5672/$name" \
    TASKQUEUE_API__TOKEN="$(token)" \
    TASKQUEUE_API__BIND="127.0.0.1:$port" \
    TASKQUEUE_TASKS__CONFIG_FILE="$here/config/cluster-tasks.yaml" \
    TASKQUEUE_SINK_URL="http://127.0.0.1:${ports[0]}" \
    TASKQUEUE_MONITORING__LOG_LEVEL=info \
    ${sink:+TASKQUEUE_API__SINK=true} \
    "${@:2}"
}

health() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$(port_of "$1")/health" || true; }

# Waits until $1's /health answers 200, failing early when the process died.
wait_ready() {
  local proc=$1 deadline=$((SECONDS + wait_secs))
  until [ "$(health "$proc")" = 200 ]; do
    if ! alive "$proc"; then
      tail -20 "$dir/$proc.log" >&2 || true
      die "$proc exited before it was ready (log: $dir/$proc.log)"
    fi
    [ $SECONDS -lt $deadline ] || die "$proc not ready within ${wait_secs}s (log: $dir/$proc.log)"
    sleep 0.2
  done
  log "$proc ready on 127.0.0.1:$(port_of "$proc") (pid $(pid_of "$proc"))"
}

drop_data() {
  "$ctl" -q delete_vhost "$name" >/dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "$name:*" \
    | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null
}

start() {
  for proc in "${procs[@]}"; do
    alive "$proc" && die "$proc already running (pid $(pid_of "$proc")); run stop first"
  done
  redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG \
    || die "Redis does not answer on 127.0.0.1:6379: run scripts/services.sh start"
  "$ctl" -q await_startup >/dev/null 2>&1 || die "RabbitMQ is not running: run scripts/services.sh start"
  if [ -z "${TASKQUEUE_BIN:-}" ]; then
    (cd "$here" && cargo build --locked --bin taskqueue)
  fi
  [ -x "$bin" ] || die "no binary at $bin"
  mkdir -p "$dir"
  drop_data
  "$ctl" -q add_vhost "$name" >/dev/null
  "$ctl" -q set_permissions -p "$name" guest '.*' '.*' '.*' >/dev/null
  (umask 077 && openssl rand -hex 32 > "$dir/token")
  for proc in "${procs[@]}"; do
    local sink=
    [ "$proc" = scheduler ] && sink=1
    run_env "$proc" "$bin" serve --config "$here/config/taskqueue.yaml" --role "$(role_of "$proc")" \
      > "$dir/$proc.log" 2>&1 < /dev/null &
    echo $! > "$dir/$proc.pid"
  done
  for proc in "${procs[@]}"; do wait_ready "$proc"; done
}

stop() {
  for proc in "${procs[@]}"; do
    alive "$proc" && kill -TERM "$(pid_of "$proc")"
  done
  local failed=0
  for proc in "${procs[@]}"; do
    local deadline=$((SECONDS + 45))
    while alive "$proc"; do
      if [ $SECONDS -ge $deadline ]; then
        log "$proc did not stop within 45s: SIGKILL"
        kill -KILL "$(pid_of "$proc")" 2>/dev/null || true
        failed=1
        break
      fi
      sleep 0.2
    done
    rm -f "$dir/$proc.pid"
  done
  drop_data
  log "stopped (logs kept in $dir)"
  return $failed
}

status() {
  for proc in "${procs[@]}"; do
    if alive "$proc"; then
      echo "$proc: up (pid $(pid_of "$proc"), 127.0.0.1:$(port_of "$proc"), /health $(health "$proc"))"
    else
      echo "$proc: down"
    fi
  done
}

api() { # METHOD PROC PATH [BODY]
  local url="http://127.0.0.1:$(port_of "$2")$3"
  curl -sf --max-time 10 -X "$1" -H "Authorization: Bearer $(token)" \
    -H 'Content-Type: application/json' ${4:+-d "$4"} "$url"
}

sink_count() { api GET scheduler /sink | jq -r --arg t "$task" '.[$t] // 0'; }
processed() { api GET "$1" /stats | jq -r '.processed'; }
done_jobs() { redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "$name:job:*:done" | wc -l; }
in_queues() {
  "$ctl" -q list_queues -p "$name" messages messages_unacknowledged 2>/dev/null \
    | awk 'NF == 2 { n += $1 + $2 } END { print n + 0 }'
}

smoke() {
  trap 'stop || true' EXIT
  start
  local file="$dir/users.jsonl"
  seq 1 "$users" | awk -v t="$task" \
    '{ printf "{\"user_id\":\"user_%d\",\"enabled_tasks\":{\"%s\":true},\"task_settings\":{},\"last_modified\":\"2026-01-01T00:00:00Z\"}\n", $1, t }' \
    > "$file"
  (run_env scheduler "$bin" users import "$file" --config "$here/config/taskqueue.yaml" >&2)
  local created
  created=$(api POST scheduler /schedule/trigger \
    "{\"task_type_id\":\"$task\",\"execute_immediately\":true}" | jq -r .jobs_created)
  [ "$created" = "$users" ] || die "trigger made $created jobs, expected $users"
  log "triggered $task for $users users"
  # Done when the sink has them all, every worker counted its outcomes and
  # nothing is left in (or unacknowledged on) any queue of the vhost.
  local deadline=$((SECONDS + wait_secs)) got total
  while :; do
    got=$(sink_count)
    total=$(($(processed worker1) + $(processed worker2)))
    if [ "$got" -ge "$users" ] && [ "$total" -ge "$users" ] && [ "$(in_queues)" = 0 ]; then break; fi
    [ $SECONDS -lt $deadline ] || die "after ${wait_secs}s: sink $got, processed $total of $users"
    sleep 0.5
  done
  local one two done
  one=$(processed worker1) two=$(processed worker2) done=$(done_jobs)
  log "sink received $got, jobs done $done, worker1 processed $one, worker2 processed $two"
  # Each done job had a 2xx from the sink, so $users done jobs and $users
  # calls mean every user was called exactly once.
  [ "$got" = "$users" ] || die "the sink received $got calls for $users users"
  [ "$done" = "$users" ] || die "$done jobs done for $users users"
  [ $((one + two)) = "$users" ] || die "workers processed $((one + two)) jobs for $users users"
  [ "$one" -gt 0 ] && [ "$two" -gt 0 ] || die "a worker executed nothing: $one and $two"
  trap - EXIT
  stop
  log "smoke passed"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  smoke) smoke ;;
  *) echo "usage: $0 start|stop|status|smoke" >&2; exit 2 ;;
esac
