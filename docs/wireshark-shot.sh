#!/usr/bin/env bash
# usage: wireshark-shot.sh FILE.pcapng OUT.png [WIRESHARK ARGS...]
# Opens FILE in Wireshark 4 under Xvfb (a fresh profile, the window 720x760) and saves what
# the screen shows to OUT.png; WS_PREFERENCES, if set, is the profile's `preferences` file
# (its columns, say). Needs: wireshark, xvfb-run, xwd, python3 with Pillow.
set -eu
FILE=$1; OUT=$2; shift 2
W=$(mktemp -d /tmp/wsshot.XXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p $W/cfg
printf 'gui.geometry_main_x: 0\ngui.geometry_main_y: 0\ngui.geometry_main_width: 1280\ngui.geometry_main_height: 760\ngui.geometry_main_maximized: TRUE\n' > $W/cfg/recent
printf '%s\n' "${WS_PREFERENCES:-}" > $W/cfg/preferences
export WIRESHARK_CONFIG_DIR=$W/cfg
ARGS=$(printf ' %q' "$@")
xvfb-run -a -s "-screen 0 1280x760x24" sh -c "wireshark -r $FILE$ARGS > $W/ws.log 2>&1 & P=\$!; sleep 12; xwd -root -silent > $W/shot.xwd; kill \$P"
python3 - $W/shot.xwd "$OUT" <<'PYEOF'
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
