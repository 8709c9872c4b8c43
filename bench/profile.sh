#!/usr/bin/env bash
# Profiles the atrest FUSE daemon while one fio job of bench/jobs runs through its mount: a
# volume on a tmpfs (like run.sh), `perf record` (software clock, DWARF call graphs) attached to
# the daemon for the whole fio run, then `perf report` of the hottest symbols, flat and by
# caller. Used to write bench/PROFILE.md.
#
# Usage: bench/profile.sh JOB MODE [OUT_DIR]     e.g. bench/profile.sh randwrite direct
#
# Settings (environment): PROFILE_BIN (default target/release/atrest; the null-cipher build is
# target/bench-null/release/atrest and needs ATREST_ALLOW_NULL_CIPHER_FOR_BENCHMARK=1),
# PROFILE_REPLICAS=1, PROFILE_RUNTIME=5, PROFILE_SIZE=128M, PROFILE_THREADS=4, PROFILE_FREQ=999.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
job=${1:?usage: profile.sh JOB MODE [OUT_DIR]}
mode=${2:?usage: profile.sh JOB MODE [OUT_DIR]}
out=${3:-$root/bench/results/profile-$job-$mode-$(date -u +%H%M%S)}
bin=${PROFILE_BIN:-$root/target/release/atrest}
replicas=${PROFILE_REPLICAS:-1}
runtime=${PROFILE_RUNTIME:-5}
size=${PROFILE_SIZE:-128M}
threads=${PROFILE_THREADS:-4}
freq=${PROFILE_FREQ:-999}
direct=0; [ "$mode" = direct ] && direct=1

log() { echo "[profile $(date +%H:%M:%S)] $*" >&2; }
[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
command -v perf >/dev/null || { log "perf is missing: apt-get install linux-perf"; exit 1; }
[ -f "$root/bench/jobs/$job.fio" ] || { log "no job $job in bench/jobs"; exit 1; }
mkdir -p "$out"

work=$(mktemp -d /tmp/atrest-prof.XXXXXX)
pid=""
cleanup() {
  set +e
  if mountpoint -q "$work/mnt"; then fusermount3 -u "$work/mnt" || fusermount3 -uz "$work/mnt"; fi
  if [ -n "$pid" ]; then
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill "$pid"
  fi
  mountpoint -q "$work/back" && umount "$work/back"
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/back" "$work/mnt"
mount -t tmpfs -o size=6G,mode=0700 atrest-prof "$work/back"
drives=()
for i in $(seq 0 $((replicas - 1))); do drives+=(--drive "$work/back/drive$i.img"); done
"$bin" format --state-dir "$work/back/state" "${drives[@]}" --drive-size 2G \
  --replicas "$replicas" >"$out/format.log" 2>&1
noapi=()
if "$bin" mount --help 2>&1 | grep -q -- --no-api; then noapi=(--no-api); fi
"$bin" mount --state-dir "$work/back/state" "${noapi[@]}" --threads "$threads" "$work/mnt" \
  >"$out/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do mountpoint -q "$work/mnt" && break; sleep 0.1; done
mountpoint -q "$work/mnt" || { log "did not mount; see $out/daemon.log"; exit 1; }
mkdir -p "$work/mnt/fio"

# Lay the file out first (not profiled), then profile the timed run only.
BENCH_DIR=$work/mnt/fio BENCH_SIZE=$size BENCH_RUNTIME=1 BENCH_DIRECT=$direct \
  fio --output-format=terse "$root/bench/jobs/$job.fio" --unlink=0 >/dev/null
perf record -F "$freq" -e cpu-clock --call-graph dwarf,16384 -p "$pid" -o "$out/perf.data" \
  2>"$out/perf-record.log" &
perf_pid=$!
sleep 0.5
BENCH_DIR=$work/mnt/fio BENCH_SIZE=$size BENCH_RUNTIME=$runtime BENCH_DIRECT=$direct \
  fio --output-format=json --output="$out/fio.json" "$root/bench/jobs/$job.fio"
kill -INT "$perf_pid"
wait "$perf_pid" || true
perf report -i "$out/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
  grep -v "^$" | head -120 >"$out/flat.txt" || true
perf report -i "$out/perf.data" --children --sort symbol --stdio -g none --percent-limit 2 \
  2>/dev/null | grep -v '^$' | head -150 >"$out/children.txt" || true
perf report -i "$out/perf.data" --no-children --sort symbol --stdio -g caller,0.5,callee \
  --percent-limit 3 2>/dev/null | head -400 >"$out/callers.txt" || true
python3 - "$out/fio.json" <<'EOF'
import json, sys
t = open(sys.argv[1]).read()
j = json.loads(t[t.index("{"):])["jobs"][0]
print(f"fio: read {j['read']['iops']:.0f} IOPS {j['read']['bw']/1024:.1f} MiB/s, "
      f"write {j['write']['iops']:.0f} IOPS {j['write']['bw']/1024:.1f} MiB/s")
EOF
log "profile in $out (flat.txt, children.txt, callers.txt, perf.data)"
