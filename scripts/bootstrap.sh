#!/usr/bin/env bash
# Creates .venv and installs what the service and its tests need, exactly as locked in
# requirements-dev.lock (every package pinned, every file checked against its sha256). Safe to run
# again: it only reinstalls when the lock or pyproject.toml changed. As root it also installs the
# Debian packages the service and the tests use when they are missing: redis-server, dovecot-imapd,
# isync, wrk; poppler-utils and Tesseract with its Malayalam and English models (text extraction and
# OCR); pango-view and Malayalam fonts (tests render real Malayalam into PDFs and images); chromium and
# chromium-driver (the status page is tested in a headless browser); promtool (from the prometheus
# package: tests check the alert rules in deploy/prometheus), without starting the Prometheus server
# it comes with.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
want_debs=()
command -v redis-server >/dev/null 2>&1 || want_debs+=(redis-server)
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || want_debs+=(dovecot-imapd)
command -v mbsync >/dev/null 2>&1 || want_debs+=(isync)
command -v wrk >/dev/null 2>&1 || want_debs+=(wrk)
command -v pdftotext >/dev/null 2>&1 || want_debs+=(poppler-utils)
command -v tesseract >/dev/null 2>&1 || want_debs+=(tesseract-ocr)
for model in mal eng; do
  ls /usr/share/tesseract-ocr/*/tessdata/"$model".traineddata >/dev/null 2>&1 || want_debs+=("tesseract-ocr-$model")
done
command -v pango-view >/dev/null 2>&1 || want_debs+=(pango1.0-tools)
fc-list :lang=ml 2>/dev/null | grep -q . || want_debs+=(fonts-smc-manjari fonts-smc-rachana fonts-smc-meera)
# A headless browser for the status page's test (tests/test_status_page.py drives it through chromedriver).
command -v chromium >/dev/null 2>&1 || want_debs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || want_debs+=(chromium-driver)
want_promtool=0
command -v promtool >/dev/null 2>&1 || want_promtool=1
if [ "${#want_debs[@]}" -gt 0 ] || [ "$want_promtool" = 1 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Debian packages: ${want_debs[*]}$([ "$want_promtool" = 1 ] && echo " prometheus")"
    apt-get update -qq >/dev/null
    if [ "${#want_debs[@]}" -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want_debs[@]}" >/dev/null
    fi
    if [ "$want_promtool" = 1 ]; then
      # Only promtool is wanted: no node exporter (a recommendation), and no server started by the
      # package's scripts (a policy-rc.d that refuses, unless one is there already; the unit disabled).
      made_policy=0
      if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
      fi
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
      [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
      if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
      fi
    fi
  else
    echo "bootstrap: missing Debian packages (${want_debs[*]}$([ "$want_promtool" = 1 ] && echo " prometheus"));" \
      "install them with apt-get as root" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
lock=requirements-dev.lock
current=$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$current" ]; then
  start=$(date +%s)
  echo "bootstrap: installing Python packages from $lock into .venv"
  # --no-compile: bytecode is written when a module is first imported, for the modules used, instead of
  # compiling every installed file up front (most of the install time otherwise).
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-compile --require-hashes -r "$lock"
  # The project itself, editable; built with the locked setuptools (no unpinned build download).
  # Its build warnings are shown only when it fails.
  if ! out=$(.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1)
  then
    echo "$out" >&2
    exit 1
  fi
  echo "$current" > "$stamp"
  echo "bootstrap: Python packages installed in $(( $(date +%s) - start )) s"
fi
