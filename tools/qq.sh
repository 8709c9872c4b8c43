#!/usr/bin/env bash
# Runs the real Qumulo `qq` client from the project's venv (made on first use by
# tools/pyenv.sh). Example, on the node as root (local-root backdoor, no login needed):
#   tools/qq.sh --host 127.0.0.1 encryption_get_status
# As another user, log in first:
#   tools/qq.sh --host 127.0.0.1 login -u admin
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/pyenv.sh" >/dev/null
exec "$root/.venv/bin/qq" "$@"
