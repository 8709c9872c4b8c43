#!/usr/bin/env bash
# Drive-pull simulation: formats a volume in a temporary directory, mounts it with its API,
# runs fio (writing and verifying with crc32c) on it, and while fio runs does one scenario:
#
#   pull-reinsert  4 drives, R=2: pull slot 2, keep writing, reinsert it, wait for the resync
#   replace        4 drives, R=2: pull slot 3, replace it with a blank image, wait for the rebuild
#   pull-two       4 drives, R=3: pull slots 1 and 4 at once, keep writing, reinsert both
#
# Then it checks: fio saw no error and no verify failure, fsck is clean, a scrub finds nothing
# to repair. Prints the slots and restriper status along the way (the same as `qq
# cluster_slots` and `qq restriper_status`). Exit 0 when every check holds.
#
# Usage: tools/drive-sim.sh SCENARIO [SIZE]   (SIZE of fio's file, default 64M)
# Env:   ATREST_BIN (default target/release/atrest), SIM_RUNTIME (fio seconds, default 20)
set -euo pipefail
scenario=${1:?usage: drive-sim.sh pull-reinsert|replace|pull-two [SIZE]}
size=${2:-64M}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${ATREST_BIN:-$root/target/release/atrest}
runtime=${SIM_RUNTIME:-20}
work=$(mktemp -d /tmp/atrest-sim-XXXXXX)
mnt=$work/mnt
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
api=(--host 127.0.0.1 --port "$port")
daemon=""
fio_pid=""

cleanup() {
  [ -n "$fio_pid" ] && kill "$fio_pid" 2>/dev/null || true
  if mountpoint -q "$mnt" 2>/dev/null; then fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" || true; fi
  if [ -n "$daemon" ]; then
    for _ in $(seq 1 100); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$daemon" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

say() { echo "== $*"; }

replicas=2
[ "$scenario" = pull-two ] && replicas=3
mkdir -p "$mnt"
"$bin" format --state-dir "$work/state" --drive "$work/d1.img" --drive "$work/d2.img" \
  --drive "$work/d3.img" --drive "$work/d4.img" --drive-size 256M --replicas "$replicas" >/dev/null
RUST_LOG=atrest=warn "$bin" mount --state-dir "$work/state" --api "127.0.0.1:$port" "$mnt" \
  2>"$work/daemon.log" &
daemon=$!
for _ in $(seq 1 200); do mountpoint -q "$mnt" && break; sleep 0.1; done
mountpoint -q "$mnt" || { cat "$work/daemon.log"; echo "mount did not appear"; exit 1; }
for _ in $(seq 1 100); do "$bin" restriper_status "${api[@]}" >/dev/null 2>&1 && break; sleep 0.1; done

fio --name=sim --filename="$mnt/fio.dat" --size="$size" --bs=4k --rw=randwrite \
  --ioengine=psync --verify=crc32c --verify_backlog=128 --verify_fatal=1 --verify_state_save=0 \
  --fsync=64 --time_based --runtime="$runtime" --output-format=json >"$work/fio.json" 2>"$work/fio.err" &
fio_pid=$!
sleep 3

wait_restriped() {
  for _ in $(seq 1 600); do
    "$bin" restriper_status "${api[@]}" | grep -q '"NOT_RUNNING"' && return 0
    sleep 0.1
  done
  echo "restriper did not finish"; return 1
}

case "$scenario" in
  pull-reinsert)
    say "pull slot 2"; "$bin" drive pull 2 "${api[@]}"
    sleep 4
    "$bin" cluster_slots "${api[@]}" | grep -c '"missing"' | grep -qx 1
    say "reinsert slot 2"; "$bin" drive insert 2 "${api[@]}" | tee "$work/insert.json"
    wait_restriped
    # Only what changed while the drive was out is resynced, not the whole drive.
    python3 - "$work/insert.json" "$work/d2.img" <<'PY'
import json, os, sys
text = open(sys.argv[1]).read()
n = json.loads(text[:text.rindex("}") + 1])["blocks_to_resync"]
drive_blocks = (os.path.getsize(sys.argv[2]) - (1 << 20)) // 4096
print(f"resynced {n} of the drive's {drive_blocks} blocks")
sys.exit(0 if 0 < n < drive_blocks // 4 else 1)
PY
    ;;
  replace)
    say "pull slot 3"; "$bin" drive pull 3 "${api[@]}"
    sleep 3
    say "replace slot 3 with a blank image"
    "$bin" drive replace 3 --image "$work/new3.img" "${api[@]}"
    wait_restriped
    "$bin" encryption_get_status "${api[@]}" >/dev/null
    ;;
  pull-two)
    say "pull slots 1 and 4"; "$bin" drive pull 1 "${api[@]}"; "$bin" drive pull 4 "${api[@]}"
    sleep 4
    "$bin" cluster_slots "${api[@]}" | grep -c '"missing"' | grep -qx 2
    say "reinsert slots 1 and 4"
    "$bin" drive insert 1 "${api[@]}"
    wait_restriped
    "$bin" drive insert 4 "${api[@]}"
    wait_restriped
    ;;
  *) echo "unknown scenario $scenario"; exit 2 ;;
esac
"$bin" cluster_slots "${api[@]}" | grep '"state"' | sort | uniq -c
"$bin" restriper_status "${api[@]}"

wait "$fio_pid" || { cat "$work/fio.err"; echo "fio failed"; exit 1; }
fio_pid=""
python3 - "$work/fio.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
print(f"fio: error={j['error']} written={j['write']['io_bytes'] >> 20} MiB "
      f"iops={j['write']['iops']:.0f}")
sys.exit(1 if j["error"] else 0)
PY
! "$bin" cluster_slots "${api[@]}" | grep -q '"missing"\|"dead"'

fusermount3 -u "$mnt"
wait "$daemon"; daemon=""
"$bin" fsck --state-dir "$work/state" 2>/dev/null | grep -qx clean || { echo "fsck not clean"; exit 1; }
"$bin" scrub --state-dir "$work/state" 2>/dev/null | tee "$work/scrub.txt"
grep -q " 0 copies repaired, 0 unrecoverable" "$work/scrub.txt" || { echo "scrub repaired something"; exit 1; }
say "PASS $scenario"
