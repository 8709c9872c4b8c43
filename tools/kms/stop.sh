#!/usr/bin/env bash
# Stops the PyKMIP server that tools/kms/start.sh started from DIR: SIGINT (PyKMIP shuts down
# cleanly on it), up to 10 s for it to exit, then SIGKILL. Does nothing if none is running.
# Usage: tools/kms/stop.sh DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
pidfile="$1/pykmip.pid"
[ -s "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
# Only signal the process if it is still the PyKMIP server we started (pids get reused).
if kill -0 "$pid" 2>/dev/null && grep -q pykmip "/proc/$pid/cmdline" 2>/dev/null; then
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$0: PyKMIP server pid $pid ignored SIGINT for 10 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi
rm -f "$pidfile"
