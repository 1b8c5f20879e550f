#!/usr/bin/env bash
# A sensor in its steady state, for the capture harnesses: its store already full, so every
# rotation retires the oldest segment and the next segment overwrites that file's pages
# (recycled files, docs/design/store.md) instead of allocating new ones.
# usage: steady_store.sh DIR MAX_MB SEGMENT_MB SENSOR [SENSOR ARGS...]
# Fills DIR with finished segments totalling MAX_MB (packets a few minutes old), then runs
# SENSOR ARGS --data-dir DIR --max-size MAX_MB --segment-size SEGMENT_MB. On SIGTERM it stops
# the sensor and deletes the pre-filled segments still there, so DIR then holds only what
# this run recorded (the harness counts every packet in it). MAX_MB must exceed what the
# run records, else retention deletes recorded packets too (and completeness says so).
set -u
DIR=$1; MAX_MB=$2; SEGMENT_MB=$3; shift 3
mkdir -p "$DIR"
COUNT=$((MAX_MB / SEGMENT_MB))
SENSOR=
STOPPED=
trap 'STOPPED=1; [ -n "$SENSOR" ] && kill -TERM $SENSOR 2>/dev/null' TERM INT
python3 - "$DIR" "$COUNT" "$SEGMENT_MB" <<'PY'
import os, struct, sys, time
out, count, segment_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def block(kind, body):
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)
shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
idb = block(1, struct.pack("<HHI", 1, 0, 0))
frame = b"\x02" * 12 + b"\x08\x00" + b"\x41" * (65000 - 14)
usec = int((time.time() - 300) * 1e6)
epb = block(6, struct.pack("<IIIII", 0, usec >> 32, usec & 0xFFFFFFFF, len(frame), len(frame)) + frame)
body = shb + idb + epb * ((segment_mb * 1_000_000 - len(shb) - len(idb)) // len(epb))
for seq in range(1, count + 1):
    with open(os.path.join(out, f"podcap-{seq}.pcapng"), "wb") as f:
        f.write(body)
PY
# A stop while filling (the trap ran after the filler ended) starts no sensor.
if [ -z "$STOPPED" ]; then
  "$@" --data-dir "$DIR" --max-size "${MAX_MB}MB" --segment-size "${SEGMENT_MB}MB" &
  SENSOR=$!
  wait $SENSOR
  # `wait` returns early when the trap runs: wait again for the sensor to finish its segment.
  wait $SENSOR 2>/dev/null
fi
for seq in $(seq 1 "$COUNT"); do rm -f "$DIR/podcap-$seq.pcapng"; done
