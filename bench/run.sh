#!/usr/bin/env bash
# fio benchmark of atrest against a null-cipher atrest, gocryptfs, a plain passthrough FUSE
# filesystem and the raw backing directory, all on one tmpfs. Prints one markdown table of
# medians (min-max) with the ratios atrest/null-cipher, atrest/gocryptfs, atrest/passthrough.
# See bench/README.md. Needs root (tmpfs and FUSE mounts).
#
# Settings (environment):
#   BENCH_QUICK=1        one round of 1 s runs on 32 MiB files (about 3 minutes)
#   BENCH_ROUNDS=3       rounds; each round runs every job on every target, in alternation
#   BENCH_RUNTIME=1      seconds per fio run
#   BENCH_SIZE=64M       file size per fio job (the parallel job has four such files)
#   BENCH_TARGETS="raw passthrough gocryptfs atrest-null-r1 atrest-r1 atrest-r2"
#   BENCH_JOBS="seqwrite seqread randread randwrite mixed parallel"
#   BENCH_MODES="direct buffered"
#   BENCH_DRIVE_SIZE=2G  size of each atrest drive image (sparse, on the tmpfs)
#   BENCH_FUSE_THREADS=4 FUSE worker threads of atrest and of the passthrough filesystem
#   BENCH_ATREST_FLAGS=  more `atrest mount` flags for the atrest targets (e.g. --page-cache)
#   BENCH_TMPFS_SIZE=10G size limit of the backing tmpfs
#   BENCH_DEADLINE_MIN=12  no fio run starts after this many minutes (time is left for the
#                        metadata and rotation benchmarks); the table then says so
#   BENCH_KEEP=1         keep the work directory (fio JSON is kept under bench/results anyway)
#   BENCH_META_FILES=100000        files of the metadata benchmark (bench/meta.py); 0 skips it
#   BENCH_META_TARGETS="atrest-r1 gocryptfs"   targets of the metadata benchmark
#   BENCH_META_ROUNDS=3  rounds of the metadata benchmark (alternating the targets)
#   BENCH_ROTATION=1     run bench/rotate.sh (rotation time, 1 GiB vs BENCH_ROT_BIG=16G of data
#                        on sparse images in BENCH_ROT_DIR=/var/tmp); 0 skips it
#
# Exit status: 0 when every requested target ran, 2 when a target could not be set up (for
# example an atrest binary without the `format`/`mount` commands), 1 on other errors.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ "${BENCH_QUICK:-0}" = 1 ]; then
  : "${BENCH_ROUNDS:=1}" "${BENCH_RUNTIME:=1}" "${BENCH_SIZE:=32M}" "${BENCH_META_FILES:=10000}"
  : "${BENCH_META_ROUNDS:=1}" "${BENCH_ROT_BIG:=2G}" "${BENCH_ROT_ROUNDS:=3}"
  export BENCH_ROT_BIG BENCH_ROT_ROUNDS
fi
META_FILES=${BENCH_META_FILES:-100000}
META_TARGETS=${BENCH_META_TARGETS:-atrest-r1 gocryptfs}
META_ROUNDS=${BENCH_META_ROUNDS:-3}
ROUNDS=${BENCH_ROUNDS:-3}
RUNTIME=${BENCH_RUNTIME:-1}
SIZE=${BENCH_SIZE:-64M}
TARGETS=${BENCH_TARGETS:-raw passthrough gocryptfs atrest-null-r1 atrest-r1 atrest-r2}
JOBS=${BENCH_JOBS:-seqwrite seqread randread randwrite mixed parallel}
MODES=${BENCH_MODES:-direct buffered}
DRIVE_SIZE=${BENCH_DRIVE_SIZE:-2G}
FUSE_THREADS=${BENCH_FUSE_THREADS:-4}
TMPFS_SIZE=${BENCH_TMPFS_SIZE:-10G}
DEADLINE=$(( $(date +%s) + ${BENCH_DEADLINE_MIN:-12} * 60 ))
NULL_TARGET_DIR=$root/target/bench-null

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- prerequisites ---

[ "$(id -u)" = 0 ] || die "run as root: the benchmark mounts a tmpfs and FUSE filesystems"
[ -e /dev/fuse ] || die "/dev/fuse is missing"
wants() { case " $TARGETS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
need_pkgs=()
command -v fio >/dev/null || need_pkgs+=(fio)
command -v fusermount3 >/dev/null || need_pkgs+=(fuse3)
command -v python3 >/dev/null || need_pkgs+=(python3)
if wants gocryptfs && ! command -v gocryptfs >/dev/null; then need_pkgs+=(gocryptfs); fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null; }
fi

# --- builds (the first null-cipher build takes a few minutes: its own target directory) ---

atrest_bin=$root/target/release/atrest
null_bin=$NULL_TARGET_DIR/release/atrest
passthrough_bin=$root/target/release/examples/passthrough
if wants passthrough; then
  log "building examples/passthrough"
  cargo build --release --quiet --example passthrough
fi
if wants atrest-r1 || wants atrest-r2; then
  log "building atrest"
  cargo build --release --quiet --bin atrest
fi
if wants atrest-null-r1; then
  log "building atrest with --features null-cipher into $NULL_TARGET_DIR"
  CARGO_TARGET_DIR=$NULL_TARGET_DIR cargo build --release --quiet --features null-cipher --bin atrest
fi

# The atrest CLI this script drives: `format --state-dir --drive --drive-size --replicas` and
# `mount --state-dir [--no-api] MOUNTPOINT` (--no-api is passed when the binary knows it).
atrest_supported() {
  local bin=$1 help
  help=$("$bin" format --help 2>&1) || return 1
  for flag in --state-dir --drive --drive-size --replicas; do
    grep -q -- "$flag" <<<"$help" || return 1
  done
  help=$("$bin" mount --help 2>&1) || return 1
  grep -q -- --state-dir <<<"$help"
}

atrest_mount_flags() {
  local help
  help=$("$1" mount --help 2>&1)
  if grep -q -- --no-api <<<"$help"; then echo --no-api; fi
  if grep -q -- --threads <<<"$help"; then echo --threads "$FUSE_THREADS"; fi
  echo "${BENCH_ATREST_FLAGS:-}"
}

# --- work area: one tmpfs holds every target's backing store ---

stamp=$(date -u +%Y%m%d-%H%M%S)
results=$root/bench/results/$stamp
mkdir -p "$results"
work=$(mktemp -d /tmp/atrest-bench.XXXXXX)
back=$work/back
mkdir -p "$back" "$work/mnt"
mount -t tmpfs -o "size=$TMPFS_SIZE,mode=0700" atrest-bench "$back"

declare -A dir_of pid_of
failed_targets=()

cleanup() {
  set +e
  for t in "${!pid_of[@]}"; do
    local m=$work/mnt/$t
    if mountpoint -q "$m"; then
      fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
    fi
  done
  for t in "${!pid_of[@]}"; do
    local p=${pid_of[$t]} i
    for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
      log "$t (pid $p) still running after unmount: terminating it"
      kill "$p" 2>/dev/null
    fi
  done
  mountpoint -q "$back" && umount "$back"
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits (bounded) until $1 is a mountpoint and process $2 is alive.
wait_mounted() {
  local m=$1 p=$2 i
  for i in $(seq 1 300); do
    mountpoint -q "$m" && return 0
    kill -0 "$p" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# Starts a foreground FUSE daemon ($2...) for target $1, logging to the results directory.
start_daemon() {
  local t=$1; shift
  local m=$work/mnt/$t
  mkdir -p "$m"
  "$@" >"$results/$t.log" 2>&1 &
  pid_of[$t]=$!
  if wait_mounted "$m" "${pid_of[$t]}"; then
    dir_of[$t]=$m
    log "$t mounted on $m"
  else
    log "$t did not mount; see $results/$t.log"
    failed_targets+=("$t")
  fi
}

setup_atrest() {
  local t=$1 bin=$2 replicas=$3 drives=() i
  if [ ! -x "$bin" ] || ! atrest_supported "$bin"; then
    log "ERROR: $bin lacks 'format --state-dir --drive --drive-size --replicas' or" \
        "'mount --state-dir': $t skipped (merge the lead's CLI first)"
    failed_targets+=("$t")
    return
  fi
  local base=$back/$t
  mkdir -p "$base"
  for i in $(seq 0 $((replicas - 1))); do
    drives+=(--drive "$base/drive$i.img")
  done
  if ! "$bin" format --state-dir "$base/state" "${drives[@]}" --drive-size "$DRIVE_SIZE" \
      --replicas "$replicas" >"$results/$t.format.log" 2>&1; then
    log "ERROR: atrest format failed for $t; see $results/$t.format.log"
    failed_targets+=("$t")
    return
  fi
  # shellcheck disable=SC2046
  start_daemon "$t" "$bin" mount --state-dir "$base/state" $(atrest_mount_flags "$bin") \
    "$work/mnt/$t"
}

for t in $TARGETS; do
  case $t in
    raw)
      mkdir -p "$back/raw"; dir_of[raw]=$back/raw ;;
    passthrough)
      mkdir -p "$back/passthrough"
      start_daemon passthrough "$passthrough_bin" "$back/passthrough" "$work/mnt/passthrough" \
        "$FUSE_THREADS" ;;
    gocryptfs)
      mkdir -p "$back/gocryptfs"
      echo "atrest-bench-password" >"$work/gocryptfs.pass"
      gocryptfs -init -quiet -scryptn 10 -passfile "$work/gocryptfs.pass" "$back/gocryptfs" \
        >"$results/gocryptfs.init.log" 2>&1 || { failed_targets+=(gocryptfs); continue; }
      start_daemon gocryptfs gocryptfs -fg -quiet -passfile "$work/gocryptfs.pass" \
        "$back/gocryptfs" "$work/mnt/gocryptfs" ;;
    atrest-r1) setup_atrest atrest-r1 "$atrest_bin" 1 ;;
    atrest-r2) setup_atrest atrest-r2 "$atrest_bin" 2 ;;
    atrest-null-r1)
      export ATREST_ALLOW_NULL_CIPHER_FOR_BENCHMARK=1
      setup_atrest atrest-null-r1 "$null_bin" 1 ;;
    *) die "unknown target $t (known: raw passthrough gocryptfs atrest-null-r1 atrest-r1 atrest-r2)" ;;
  esac
done

ready=()
for t in $TARGETS; do [ -n "${dir_of[$t]:-}" ] && ready+=("$t"); done
[ ${#ready[@]} -gt 0 ] || die "no target could be set up"

cat >"$results/settings.txt" <<EOF
date_utc=$stamp
git=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
kernel=$(uname -r)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
cores=$(nproc)
fio=$(fio --version)
gocryptfs=$(gocryptfs -version 2>/dev/null | head -1 || echo none)
rounds=$ROUNDS
runtime_s=$RUNTIME
size=$SIZE
drive_size=$DRIVE_SIZE
fuse_threads=$FUSE_THREADS
backing=tmpfs ($TMPFS_SIZE)
targets=${ready[*]}
failed=${failed_targets[*]:-}
EOF

# --- the runs: round by round, every job and mode, every target in turn (the order of the
# targets rotates from round to round so that none is always first) ---

log "targets ready: ${ready[*]}; ${ROUNDS} rounds of ${RUNTIME}s runs on $SIZE files"
n=${#ready[@]}
stopped=""
for round in $(seq 1 "$ROUNDS"); do
  for job in $JOBS; do
    for mode in $MODES; do
      direct=0; [ "$mode" = direct ] && direct=1
      for k in $(seq 0 $((n - 1))); do
        t=${ready[$(( (k + round - 1) % n ))]}
        if [ "$(date +%s)" -ge "$DEADLINE" ]; then
          stopped="deadline of ${BENCH_DEADLINE_MIN:-12} min reached in round $round"
          break 4
        fi
        out=$results/$t/$job-$mode-r$round.json
        mkdir -p "$results/$t" "${dir_of[$t]}/fio"
        if ! BENCH_DIR=${dir_of[$t]}/fio BENCH_SIZE=$SIZE BENCH_RUNTIME=$RUNTIME \
            BENCH_DIRECT=$direct timeout $((RUNTIME + 300)) \
            fio --output-format=json --output="$out" "$root/bench/jobs/$job.fio" \
            >"$results/$t/$job-$mode-r$round.err" 2>&1; then
          log "fio $job ($mode) failed on $t; see $results/$t/$job-$mode-r$round.err"
          rm -f "$out"
        fi
      done
    done
  done
  log "round $round done"
done
[ -n "$stopped" ] && { log "$stopped"; echo "stopped=$stopped" >>"$results/settings.txt"; }

# --- metadata: create, stat, list, delete BENCH_META_FILES empty files in one directory ---

meta_ready=()
for t in $META_TARGETS; do [ -n "${dir_of[$t]:-}" ] && meta_ready+=("$t"); done
if [ "$META_FILES" -gt 0 ] && [ ${#meta_ready[@]} -gt 0 ]; then
  echo "meta_files=$META_FILES" >>"$results/settings.txt"
  log "metadata: $META_ROUNDS rounds of $META_FILES files on ${meta_ready[*]}"
  for round in $(seq 1 "$META_ROUNDS"); do
    nm=${#meta_ready[@]}
    for k in $(seq 0 $((nm - 1))); do
      t=${meta_ready[$(( (k + round - 1) % nm ))]}
      mkdir -p "$results/$t"
      if ! timeout 900 python3 "$root/bench/meta.py" "${dir_of[$t]}/meta-r$round" "$META_FILES" \
          "$results/$t/meta-r$round.meta" >"$results/$t/meta-r$round.err" 2>&1; then
        log "metadata benchmark failed on $t; see $results/$t/meta-r$round.err"
      fi
    done
    log "metadata round $round done"
  done
fi

python3 "$root/bench/report.py" "$results" | tee "$results/table.md"

# --- rotation time: 1 GiB vs 16 GiB of data (its own volumes on a disk-backed directory) ---

rot_status=0
if [ "${BENCH_ROTATION:-1}" = 1 ] && wants atrest-r1; then
  log "rotation benchmark (bench/rotate.sh)"
  echo | tee -a "$results/table.md"
  bash "$root/bench/rotate.sh" "$results" | tee -a "$results/table.md" || rot_status=${PIPESTATUS[0]}
  [ "$rot_status" = 0 ] || log "rotation benchmark: exit status $rot_status"
fi
log "fio JSON and logs in $results"

if [ ${#failed_targets[@]} -gt 0 ]; then
  log "targets that could not be set up: ${failed_targets[*]}"
  exit 2
fi
[ "$rot_status" = 0 ] || exit "$rot_status"
