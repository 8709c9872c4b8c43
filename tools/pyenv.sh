#!/usr/bin/env bash
# Creates (or refreshes) the project's Python virtual environment in .venv, with the pinned
# packages of tools/requirements.txt: the real qq client, PyKMIP, and `cryptography` for the
# independent XTS cross-check. Prints the path of the venv's python.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
req="$root/tools/requirements.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
