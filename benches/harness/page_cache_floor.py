#!/usr/bin/env python3
"""The page-cache floor of a capture: writes RATE MB/s into 256 MB files under DIR (tmpfs in
the harnesses) until SIGTERM, and nothing else. Run as the "capture command" of
tcp_capture.sh it shows what merely writing a capture's bytes costs the traffic, which any
recorder that keeps every byte pays (tcpdump and podcap alike).
usage: page_cache_floor.py RATE_MB_S DIR"""
import os
import signal
import sys
import time

rate = float(sys.argv[1]) * 1e6
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
chunk = b"\x41" * (1 << 20)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
start = time.monotonic()
written = 0
index = 0
f = None
while True:
    if f is None or f.tell() >= 256 << 20:
        if f:
            f.close()
        # Not named *.pcap*: the harness counts no packets in these.
        f = open(os.path.join(out, f"floor-{index}.bin"), "wb", buffering=0)
        index += 1
    f.write(chunk)
    written += len(chunk)
    ahead = written / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
