#!/usr/bin/env python3
"""File-metadata benchmark of one directory: create, stat, list and delete N empty files.

Usage: meta.py DIR N OUT.json

In DIR (made afresh, must not exist) it times four phases, one after the other, each over the
same N names:

- create: open(O_CREAT | O_EXCL | O_WRONLY) and close of N empty files in one directory;
- stat:   os.stat of each of them;
- list:   one full listing of the directory (os.scandir, names only, every entry counted);
- delete: os.unlink of each, then rmdir of DIR.

Between phases it waits 1.5 s so that the kernel's attribute and entry caches of a FUSE mount
(1 s timeouts on atrest and gocryptfs) have expired and the stat and list phases reach the
filesystem. Writes {"create_s":..., "stat_s":..., "list_s":..., "delete_s":..., "n":N} to
OUT.json. Exits 1 (with the reason on stderr) when a call fails or the listing is not N names.
"""
import json
import os
import sys
import time

PAUSE_S = 1.5


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    top, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.mkdir(top)
    names = [os.path.join(top, f"f{i:07d}") for i in range(n)]
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    result = {"n": n}

    t = time.monotonic()
    for p in names:
        os.close(os.open(p, flags, 0o644))
    result["create_s"] = time.monotonic() - t
    time.sleep(PAUSE_S)

    t = time.monotonic()
    for p in names:
        st = os.stat(p)
        if st.st_size != 0:
            raise SystemExit(f"{p}: size {st.st_size}, expected 0")
    result["stat_s"] = time.monotonic() - t
    time.sleep(PAUSE_S)

    t = time.monotonic()
    count = 0
    with os.scandir(top) as it:
        for _ in it:
            count += 1
    result["list_s"] = time.monotonic() - t
    if count != n:
        raise SystemExit(f"{top}: listing has {count} entries, expected {n}")
    time.sleep(PAUSE_S)

    t = time.monotonic()
    for p in names:
        os.unlink(p)
    os.rmdir(top)
    result["delete_s"] = time.monotonic() - t

    with open(out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
