#!/usr/bin/env bash
# Starts/stops moto (DynamoDB + SQS) in server mode on a free loopback port.
#   moto.sh start   -> starts it (installing it first if needed), prints the endpoint URL
#   moto.sh stop    -> stops the one started by `start`
#   moto.sh run CMD -> starts it, runs CMD with AWS_ENDPOINT_URL set, stops it on exit
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
state="$root/.local"
mkdir -p "$state"

free_port() {
  "$root/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  "$root/infra/scripts/venv.sh"
  local attempt port pid
  for attempt in 1 2 3; do
    port="$(free_port)"
    "$root/.venv/bin/python" "$root/infra/scripts/moto_server.py" -H 127.0.0.1 -p "$port" >"$state/moto-$port.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      if "$root/.venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/data.json', timeout=1)" 2>/dev/null; then
        echo "$pid" >"$state/moto.pid"
        echo "$state/moto-$port.log" >"$state/moto.log-path"
        echo "http://127.0.0.1:$port" >"$state/moto.endpoint"
        echo "http://127.0.0.1:$port"
        return 0
      fi
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    echo "moto did not start on port $port (attempt $attempt); log: $state/moto-$port.log" >&2
  done
  return 1
}

stop() {
  if [ -f "$state/moto.pid" ]; then
    kill "$(cat "$state/moto.pid")" 2>/dev/null || true
    [ -f "$state/moto.log-path" ] && rm -f "$(cat "$state/moto.log-path")"
    rm -f "$state/moto.pid" "$state/moto.endpoint" "$state/moto.log-path"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  run)
    shift
    endpoint="$(start)"
    pid="$(cat "$state/moto.pid")"
    log="$(cat "$state/moto.log-path")"
    # Only this run's server is stopped, even if another run started one meanwhile.
    trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"; if [ "$(cat "$state/moto.pid" 2>/dev/null)" = "$pid" ]; then rm -f "$state/moto.pid" "$state/moto.endpoint" "$state/moto.log-path"; fi' EXIT
    echo "moto listening on $endpoint" >&2
    AWS_ENDPOINT_URL="$endpoint" "$@"
    ;;
  *) echo "usage: $0 start|stop|run CMD..." >&2; exit 2 ;;
esac
