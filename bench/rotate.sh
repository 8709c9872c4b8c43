#!/usr/bin/env bash
# Rotation time against the amount of data: two atrest volumes (one drive each, sparse images on
# a disk-backed directory), one filled with BENCH_ROT_SMALL of data and one with BENCH_ROT_BIG,
# each rotated BENCH_ROT_ROUNDS times online (`rotate_encryption_keys` through the REST API of the
# mounted volume) and BENCH_ROT_ROUNDS times offline (`atrest rotate-keys` on the unmounted
# volume). Writes rotate.json (every time, in seconds) and prints a markdown table with the
# medians, the min-max and the ratio big/small (the design wants it near 1; the bench fails
# the check above 1.2).
#
# Usage: bench/rotate.sh RESULTS_DIR     (run.sh calls it; needs root, /dev/fuse, the atrest build)
#
# Settings (environment):
#   BENCH_ROT_DIR=/var/tmp     disk-backed directory for the sparse drive images
#   BENCH_ROT_SMALL=1G         data written into the small volume
#   BENCH_ROT_BIG=16G          data written into the big volume. The fill is the slow part (it
#                              runs at the disk's speed: about 4 minutes for 16 GiB at 75 MB/s),
#                              so the filled big volume is kept in BENCH_ROT_CACHE and reused by
#                              later runs (rotation re-wraps headers; the data stays valid).
#   BENCH_ROT_CACHE=/var/tmp/atrest-bench-rot   where the filled big volume is kept; "none"
#                              makes and deletes it in every run. Delete the directory to
#                              measure the fill again or to free the disk space.
#   BENCH_ROT_ROUNDS=15        rotations of each kind per volume, the two volumes in
#                              alternation (each takes 5 to 150 ms, mostly header syncs on a
#                              shared disk: the median needs several)
#   BENCH_ROT_PORT=18443       first of two local ports for the volumes' APIs
#   BENCH_ROT_KEEP=0           1: keep the images
#
# Exit status: 0 when it ran and big/small <= 1.2 for both kinds, 3 when a ratio is above 1.2,
# 1 on errors.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
results=${1:?usage: rotate.sh RESULTS_DIR}
mkdir -p "$results"
bin=$root/target/release/atrest
ROT_DIR=${BENCH_ROT_DIR:-/var/tmp}
SMALL=${BENCH_ROT_SMALL:-1G}
BIG=${BENCH_ROT_BIG:-16G}
ROUNDS=${BENCH_ROT_ROUNDS:-15}
CACHE=${BENCH_ROT_CACHE:-/var/tmp/atrest-bench-rot}
PORT=${BENCH_ROT_PORT:-18443}

log() { echo "[rotate $(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"
[ -x "$bin" ] || die "$bin is missing: cargo build --release --bin atrest"

# Size in MiB of "16G", "512M".
mib() {
  local s=${1^^}
  case $s in
    *G) echo $(( ${s%G} * 1024 )) ;;
    *M) echo $(( ${s%M} )) ;;
    *) die "size $1: use M or G" ;;
  esac
}
small_mib=$(mib "$SMALL")
big_mib=$(mib "$BIG")

work=$(mktemp -d "$ROT_DIR/atrest-rot.XXXXXX")
declare -A pid_of
cleanup() {
  set +e
  for v in "${!pid_of[@]}"; do
    local m=$work/$v/mnt p=${pid_of[$v]} i
    mountpoint -q "$m" && { fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"; }
    for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill "$p"
  done
  [ "${BENCH_ROT_KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.4f}')" "$1" "$2"; }

# try_mount NAME PORT: mounts $work/NAME/state on $work/NAME/mnt with its API on PORT; fails
# (status 1, daemon gone) when it does not mount within 30 s.
try_mount() {
  local v=$1 port=$2 i
  "$bin" mount --state-dir "$work/$v/state" --api "127.0.0.1:$port" "$work/$v/mnt" \
    >>"$results/rotate-$v.log" 2>&1 &
  pid_of[$v]=$!
  for i in $(seq 1 300); do
    mountpoint -q "$work/$v/mnt" && return 0
    kill -0 "${pid_of[$v]}" 2>/dev/null || { unset "pid_of[$v]"; return 1; }
    sleep 0.1
  done
  kill "${pid_of[$v]}" 2>/dev/null
  wait "${pid_of[$v]}" 2>/dev/null
  unset "pid_of[$v]"
  return 1
}

mount_volume() {
  try_mount "$1" "$2" || die "$1 did not mount; see $results/rotate-$1.log"
}

unmount_volume() {
  local v=$1 i
  fusermount3 -u "$work/$v/mnt"
  for i in $(seq 1 600); do kill -0 "${pid_of[$v]}" 2>/dev/null || break; sleep 0.1; done
  wait "${pid_of[$v]}" || die "$v: atrest mount exited with an error; see $results/rotate-$v.log"
  unset "pid_of[$v]"
}

# Waits (bounded) until the API of the volume answers a login.
api_login() {
  local v=$1 port=$2 i
  for i in $(seq 1 100); do
    if "$bin" login -u admin -p "$(cat "$work/admin.pass")" --host 127.0.0.1 --port "$port" \
        --credentials-store "$work/$v/creds" >/dev/null 2>>"$results/rotate-$v.log"; then
      return 0
    fi
    sleep 0.1
  done
  die "$v: API login on port $port failed; see $results/rotate-$v.log"
}

echo "atrest-bench-admin-password" >"$work/admin.pass"
chmod 600 "$work/admin.pass"
declare -A online offline fill_s port_of
port=$PORT
for v in small big; do
  if [ "$v" = small ]; then data=$small_mib; else data=$big_mib; fi
  drive_mib=$(( data + data / 4 + 2048 ))
  cached=""
  if [ "$v" = big ] && [ "$CACHE" != none ]; then
    # The big volume lives in the cache; $work/big is a link to it.
    mkdir -p "$CACHE"
    chmod 700 "$CACHE"
    vdir=$CACHE/big-${data}M
    if [ -f "$vdir/filled" ] && [ -f "$vdir/drive0.img" ] &&
        "$bin" status --state-dir "$vdir/state" >/dev/null 2>>"$results/rotate-$v.log"; then
      cached=$vdir
    else
      rm -rf "$vdir"
      mkdir -p "$vdir"
    fi
    ln -s "$vdir" "$work/$v"
  fi
  mkdir -p "$work/$v/mnt"
  if [ -n "$cached" ] && ! try_mount "$v" "$port"; then
    # Made by an atrest of another on-disk format: fill it afresh.
    log "$v: the volume kept in $cached does not mount with this build; filling it again"
    rm -rf "${cached:?}"/*
    mkdir -p "$work/$v/mnt"
    cached=""
  fi
  if [ -n "$cached" ]; then
    fill_s[$v]=$(cat "$cached/filled")
    export ROT_BIG_CACHED=$cached
    log "$v: reusing the volume filled earlier in $cached (fill took ${fill_s[$v]} s)"
  else
  log "$v: format one sparse drive of ${drive_mib} MiB in $work/$v"
  "$bin" format --state-dir "$work/$v/state" --drive "$work/$v/drive0.img" \
    --drive-size "${drive_mib}M" --replicas 1 --admin-password-file "$work/admin.pass" \
    >"$results/rotate-$v.format.log" 2>&1 || die "format failed; see $results/rotate-$v.format.log"
  mount_volume "$v" "$port"
  log "$v: writing $data MiB through the mount (dd, 1 MiB blocks, fsync at the end)"
  t0=$(now)
  # Random data so that nothing could be deduplicated or compressed anywhere below.
  head -c 64M /dev/urandom >"$work/pattern"
  for ((k = 0; k < data / 64; k++)); do cat "$work/pattern"; done |
    dd of="$work/$v/mnt/fill" bs=1M iflag=fullblock conv=fsync status=none
  fill_s[$v]=$(elapsed "$t0" "$(now)")
  fi
  used=$(du -m "$work/$v/drive0.img" | cut -f1)
  log "$v: filled in ${fill_s[$v]} s; the image holds $used MiB"
  echo "$used" >"$results/rotate-$v.used_mib"

  api_login "$v" "$port"
  port_of[$v]=$port
  port=$((port + 1))
done

# Both volumes are rotated in alternation (small, big; then big, small in the next round), so
# that a slow spell of the machine or the disk falls on both alike.
for r in $(seq 1 "$ROUNDS"); do
  order="small big"; [ $((r % 2)) = 0 ] && order="big small"
  for v in $order; do
    t0=$(now)
    "$bin" rotate_encryption_keys --host 127.0.0.1 --port "${port_of[$v]}" \
      --credentials-store "$work/$v/creds" >>"$results/rotate-$v.log" 2>&1 ||
      die "$v: rotate_encryption_keys failed; see $results/rotate-$v.log"
    online[$v]+="$(elapsed "$t0" "$(now)") "
  done
done
for v in small big; do unmount_volume "$v"; done
for r in $(seq 1 "$ROUNDS"); do
  order="small big"; [ $((r % 2)) = 0 ] && order="big small"
  for v in $order; do
    t0=$(now)
    "$bin" rotate-keys --state-dir "$work/$v/state" >>"$results/rotate-$v.log" 2>&1 ||
      die "$v: atrest rotate-keys failed; see $results/rotate-$v.log"
    offline[$v]+="$(elapsed "$t0" "$(now)") "
  done
done
for v in small big; do
  log "$v: online ${online[$v]}s; offline ${offline[$v]}s"
  if [ "$v" = big ] && [ "$CACHE" != none ]; then
    echo "${fill_s[$v]}" >"$work/$v/filled"
  else
    rm -f "$work/$v/drive0.img"
  fi
done

python3 - "$results/rotate.json" "$SMALL" "$BIG" "${fill_s[small]}" "${fill_s[big]}" \
  "${online[small]}" "${online[big]}" "${offline[small]}" "${offline[big]}" \
  "$(cat "$results/rotate-small.used_mib")" "$(cat "$results/rotate-big.used_mib")" <<'EOF'
import json, os, statistics, sys
out, small, big, fill_small, fill_big = sys.argv[1:6]
on_s, on_b, off_s, off_b = ([float(x) for x in a.split()] for a in sys.argv[6:10])
used_small, used_big = int(sys.argv[10]), int(sys.argv[11])
data = {"small": small, "big": big, "fill_s": {"small": float(fill_small), "big": float(fill_big)},
        "image_used_mib": {"small": used_small, "big": used_big},
        "online_s": {"small": on_s, "big": on_b}, "offline_s": {"small": off_s, "big": off_b}}
with open(out, "w") as f:
    json.dump(data, f, indent=1)
print(f"## Key rotation time against data held (one drive, replicas 1, sparse image on disk)\n")
print(f"Small volume: {small} written through the mount ({used_small} MiB allocated in the "
      f"image, fill {float(fill_small):.1f} s); big volume: {big} ({used_big} MiB, fill "
      f"{float(fill_big):.1f} s{', in an earlier run: the filled volume was reused from ' + os.environ['ROT_BIG_CACHED'] if os.environ.get('ROT_BIG_CACHED') else ''}). "
      f"Times in seconds, {len(on_s)} rotations of each kind, each from the start of the "
      f"client command to its end.\n")
print("| rotation | small: median | small: min-max | big: median | big: min-max | big/small |")
print("|---|---:|---:|---:|---:|---:|")
worst = 0.0
for name, s, b in (("online (`rotate_encryption_keys` via the API)", on_s, on_b),
                   ("offline (`atrest rotate-keys`)", off_s, off_b)):
    ms, mb = statistics.median(s), statistics.median(b)
    ratio = mb / ms
    worst = max(worst, ratio)
    print(f"| {name} | {ms:.3f} | {min(s):.3f}-{max(s):.3f} | {mb:.3f} | "
          f"{min(b):.3f}-{max(b):.3f} | {ratio:.2f} |")
print()
print(f"Check big/small <= 1.2: {'pass' if worst <= 1.2 else 'FAIL'} (worst {worst:.2f}).")
sys.exit(0 if worst <= 1.2 else 3)
EOF
