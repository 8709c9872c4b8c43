#!/usr/bin/env bash
# Starts PyKMIP's server on 127.0.0.1:PORT with TLS 1.2 and client-certificate authentication,
# using the certificates that tools/kms/gen-certs.sh made in DIR (server.pem, server.key,
# ca.pem). Writes in DIR: pykmip.conf, pykmip.log (server log), pykmip.out (stdout/stderr),
# pykmip.db (sqlite), policies/ (empty: the built-in policy applies), pykmip.pid.
# Returns once the server accepts TCP connections (at most 30 s), or fails with its log tail.
# Usage: tools/kms/start.sh DIR PORT      Stop it with tools/kms/stop.sh DIR.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 DIR PORT" >&2; exit 2; }
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(cd "$1" && pwd)
port=$2
for f in server.pem server.key ca.pem; do
  [ -r "$dir/$f" ] || { echo "$0: missing $dir/$f (run tools/kms/gen-certs.sh $dir)" >&2; exit 1; }
done
if [ -s "$dir/pykmip.pid" ] && kill -0 "$(cat "$dir/pykmip.pid")" 2>/dev/null; then
  echo "$0: a server from $dir is already running (pid $(cat "$dir/pykmip.pid"))" >&2
  exit 1
fi

# Serialized: tests start several servers at once, and pyenv.sh may (re)build the venv.
python=$(flock "${TMPDIR:-/tmp}/atrest-pyenv.lock" "$root/tools/pyenv.sh")
server="$(dirname "$python")/pykmip-server"
mkdir -p "$dir/policies"
rm -f "$dir/pykmip.db" "$dir/pykmip.log" "$dir/pykmip.out"
cat > "$dir/pykmip.conf" <<CONF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$dir/server.pem
key_path=$dir/server.key
ca_path=$dir/ca.pem
auth_suite=TLS1.2
policy_path=$dir/policies
enable_tls_client_auth=True
logging_level=INFO
database_path=$dir/pykmip.db
CONF

# setsid: the server gets its own process group, so a Ctrl-C in the caller's terminal does not
# reach it and stop.sh alone decides when it ends.
setsid "$server" -f "$dir/pykmip.conf" -l "$dir/pykmip.log" \
  >"$dir/pykmip.out" 2>&1 </dev/null &
pid=$!
echo "$pid" > "$dir/pykmip.pid"

for _ in $(seq 1 300); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "$0: PyKMIP server exited during start-up; last log lines:" >&2
    tail -n 20 "$dir/pykmip.out" "$dir/pykmip.log" >&2 2>/dev/null || true
    rm -f "$dir/pykmip.pid"
    exit 1
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "PyKMIP server pid $pid listening on 127.0.0.1:$port"
    exit 0
  fi
  sleep 0.1
done
echo "$0: PyKMIP server did not accept connections on 127.0.0.1:$port within 30 s" >&2
"$(dirname "$0")/stop.sh" "$dir" >&2 || true
exit 1
