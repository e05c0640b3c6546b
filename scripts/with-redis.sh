#!/usr/bin/env bash
# Runs a command with REDIS_URL pointing at a Redis that answers: the one at $REDIS_URL (default
# redis://127.0.0.1:6379/0) if it does, else a private redis-server on a free port, stopped after.
set -euo pipefail
cd "$(dirname "$0")/.."
url=${REDIS_URL:-redis://127.0.0.1:6379/0}
if .venv/bin/python - "$url" <<'PY' 2>/dev/null
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=2).ping()
PY
then
  export REDIS_URL="$url"
  exec "$@"
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "No Redis answers at $url and redis-server is not installed: apt-get install redis-server, or set REDIS_URL" >&2
  exit 1
fi
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d /tmp/kmrl-redis.XXXXXX)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize yes \
  --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
trap 'kill "$(cat "$dir/redis.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "with-redis: started a private redis-server on 127.0.0.1:$port"
export REDIS_URL="redis://127.0.0.1:$port/0"
"$@"
