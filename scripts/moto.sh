#!/usr/bin/env bash
# Starts or stops the local AWS-compatible server (moto) used by the tests
# and by `make aws-local`. Idempotent: `start` reuses a running server.
#   scripts/moto.sh start   -> prints the endpoint URL
#   scripts/moto.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
state=.moto
mkdir -p "$state"
venv=${VENV:-.venv}

running() {
  [ -f "$state/pid" ] && [ -f "$state/port" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null \
    && python3 -c "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + sys.argv[1] + '/moto-api/', timeout=2)" "$(cat "$state/port")" 2>/dev/null
}

case "${1:-}" in
  start)
    if running; then
      echo "http://127.0.0.1:$(cat "$state/port")"
      exit 0
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    MOTO_PORT="$port" nohup "$venv/bin/python" scripts/moto_server.py 127.0.0.1 "$port" >"$state/moto.log" 2>&1 &
    echo $! >"$state/pid"
    echo "$port" >"$state/port"
    for _ in $(seq 1 150); do
      if running; then
        echo "http://127.0.0.1:$port"
        exit 0
      fi
      sleep 0.2
    done
    echo "moto did not start; see $state/moto.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$state/pid" ]; then
      pid=$(cat "$state/pid")
      kill "$pid" 2>/dev/null || true
      # Gone before this returns (SIGKILL after 5 s), so nothing outlives a run.
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$state/pid" "$state/port"
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
