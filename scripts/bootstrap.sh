#!/usr/bin/env bash
# Creates .venv and installs what the service and its tests need. Safe to run again: it only
# reinstalls when a requirements file changed. As root it also installs the Debian packages the
# tests use (redis-server, dovecot-imapd, isync, wrk) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
want_debs=()
command -v redis-server >/dev/null 2>&1 || want_debs+=(redis-server)
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || want_debs+=(dovecot-imapd)
command -v mbsync >/dev/null 2>&1 || want_debs+=(isync)
command -v wrk >/dev/null 2>&1 || want_debs+=(wrk)
if [ "${#want_debs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Debian packages: ${want_debs[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want_debs[@]}" >/dev/null
  else
    echo "bootstrap: missing Debian packages (${want_debs[*]}); install them with apt-get as root" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
current=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$current" ]; then
  start=$(date +%s)
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  .venv/bin/python -m pip install -q --no-deps -e . >/dev/null
  echo "$current" > "$stamp"
  echo "bootstrap: Python packages installed in $(( $(date +%s) - start )) s"
fi
