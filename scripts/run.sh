#!/usr/bin/env bash
# Runs the ingress and the worker in the foreground, for `make run`.
# Ctrl-c (or SIGTERM, or either process exiting) stops both: each gets
# SIGTERM, then SIGKILL if it has not exited within a few seconds, so no
# process is left holding the ports.
#   scripts/run.sh BIN_DIR
set -u
bin=${1:-target/debug}
pids=()

stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for _ in $(seq 1 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  wait 2>/dev/null
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

if [ -x "$bin/hookline-worker" ]; then
  "$bin/hookline-worker" &
  pids+=($!)
fi
"$bin/hookline-ingress" &
pids+=($!)
# Returns when either exits (or a signal arrives); the traps stop the other.
wait -n
