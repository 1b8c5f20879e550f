#!/usr/bin/env bash
# Makes docs/wireshark-tls.png (the README's picture of decrypted TLS): a Go HTTPS request recorded by podcap --tls-secrets, opened
# in Wireshark (under Xvfb) with nothing configured. Namespaces shA/shN, 198.18.0.0/30.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd); W=$(mktemp -d /tmp/tlsshot.XXXX)
# Needs: a debug build (cargo xtask build), go, tshark, and what wireshark-shot.sh needs.
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
bash $ROOT/docs/wireshark-shot.sh $SEG $ROOT/docs/wireshark-tls.png -Y http -g $N
