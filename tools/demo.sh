#!/usr/bin/env bash
# The demo volume behind `make run`: three sparse 2 GiB drive images under DIR (default ./demo)
# with a local master key, mounted on DIR/mnt until Ctrl-C. Formats only the first time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/demo}
bin=${ATREST_BIN:-$root/target/release/atrest}
mkdir -p "$dir/mnt"
if [ ! -f "$dir/state/volume.json" ]; then
  "$bin" format --state-dir "$dir/state" \
    --drive "$dir/drive0.img" --drive "$dir/drive1.img" --drive "$dir/drive2.img" \
    --drive-size 2G --replicas 2
fi
echo "Mounting on $dir/mnt (Ctrl-C unmounts). In another shell: ls $dir/mnt"
exec "$bin" mount --state-dir "$dir/state" "$dir/mnt" "${@:2}"
