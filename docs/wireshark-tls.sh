#!/usr/bin/env bash
# Makes docs/wireshark-tls.png (the README's picture of decrypted TLS): a Go HTTPS request recorded by podcap --tls-secrets, opened
# in Wireshark (under Xvfb) with nothing configured. Namespaces shA/shN, 198.18.0.0/30.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd); W=$(mktemp -d /tmp/tlsshot.XXXX)
# Needs: a debug build (cargo xtask build), go, tshark, wireshark, xvfb-run, xwd, Pillow.
cleanup() {
  for p in ${SENSOR:-} ${SERVER:-}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del shA 2>/dev/null || true; ip netns del shN 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
ip netns add shA; ip netns add shN
ip link add a0 netns shA type veth peer name n0 netns shN
ip -n shA addr add 198.18.0.1/30 dev a0; ip -n shN addr add 198.18.0.2/30 dev n0
for ns in shA shN; do ip -n $ns link set lo up; done
ip -n shA link set a0 up; ip -n shN link set n0 up
(cd $W && GOCACHE=$W/gocache go build -o $W/tlspod $ROOT/sensor/tests/go/tlspod.go)
ip netns exec shN $ROOT/target/debug/podcap-sensor --iface n0 --data-dir $W/data --tls-secrets > $W/sensor.log 2>&1 &
SENSOR=$!
sleep 1
ip netns exec shN $W/tlspod server 198.18.0.2:8443 > $W/server.log 2>&1 &
SERVER=$!
for i in $(seq 1 50); do grep -q "reading TLS secrets of Go program $W/tlspod" $W/sensor.log && break; sleep 0.2; done
ip netns exec shA $W/tlspod client https://198.18.0.2:8443/api/orders/4711 1 '{"item":"pcap-book","qty":2}'
sleep 2.5
kill -TERM $SENSOR; wait $SENSOR || true; SENSOR=
grep "TLS secrets:" $W/sensor.log
SEG=$(ls $W/data/*.pcapng | head -1)
N=$(tshark -r $SEG -Y http.request -T fields -e frame.number | head -1)
echo "request frame $N"
mkdir -p $W/cfg; printf 'gui.geometry_main_x: 0\ngui.geometry_main_y: 0\ngui.geometry_main_width: 1280\ngui.geometry_main_height: 760\ngui.geometry_main_maximized: TRUE\n' > $W/cfg/recent
export WIRESHARK_CONFIG_DIR=$W/cfg
xvfb-run -a -s "-screen 0 1280x760x24" sh -c "wireshark -r $SEG -Y http -g $N > $W/ws.log 2>&1 & P=\$!; sleep 12; xwd -root -silent > $W/shot.xwd; kill \$P"
python3 - $W/shot.xwd $ROOT/docs/wireshark-tls.png <<'PYEOF'
import struct, sys
from PIL import Image
data = open(sys.argv[1], 'rb').read()
h = struct.unpack('>25I', data[:100])
header_size, _, fmt, depth, width, height, _, byte_order, _, _, _, bpp, bpl = h[:13]
ncolors = h[19]
off = header_size + ncolors * 12
assert bpl == width * 4, (bpp, bpl)
raw = data[off:off + bpl * height]
mode = 'BGRX' if byte_order == 0 else 'XRGB'
img = Image.frombuffer('RGB', (width, height), raw, 'raw', mode, bpl, 1)
img.crop((0, 0, min(width, 720), height)).save(sys.argv[2], optimize=True)
print(width, height)
PYEOF
