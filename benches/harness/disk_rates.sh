#!/usr/bin/env bash
# Completeness at offered rates that are fixed fractions of the disk's own rate (issue #31):
# the store on a disk-backed file system, trafgen 1500 B frames and iperf3 TCP bulk paced
# to 0.5, 0.8, 0.9 and 1.2 of `dd bs=1M oflag=direct` on the same file system, podcap
# (direct writes, the default) beside tcpdump -w, each run SECONDS long.
# usage: disk_rates.sh SENSOR DIR SECONDS [CAP_MB_S]
# CAP_MB_S: stand for a slower disk: the sensor (and dd, to measure it) run in a blkio
# cgroup whose throttle.write_bps_device caps their direct writes. tcpdump writes through
# the page cache, which cgroup v1 does not throttle, so it is left out of capped runs.
# Prints a markdown table; every harness line goes to stderr.
set -u
SENSOR=$1; DIR=$2; SECS=$3; CAP=${4:-}
FRACTIONS=${FRACTIONS:-0.5 0.8 0.9 1.2}
HERE=$(cd "$(dirname "$0")" && pwd)
DEV=$(findmnt -no MAJ:MIN -T "$DIR")
G=
cleanup() {
  if [ -n "$G" ] && [ -d "$G" ]; then
    for p in $(cat "$G/cgroup.procs" 2>/dev/null); do echo "$p" > /sys/fs/cgroup/blkio/cgroup.procs 2>/dev/null; done
    rmdir "$G" 2>/dev/null
  fi
  rm -f "$DIR/podcap-dd.$$"
}
trap cleanup EXIT
if [ -n "$CAP" ]; then
  G=/sys/fs/cgroup/blkio/podcap-disk-rates-$$
  mkdir -p "$G"
  echo "$DEV $((CAP * 1000000))" > "$G/blkio.throttle.write_bps_device"
fi
# dd's rate in MB/s (in the cgroup when capped).
dd_rate() {
  local out
  if [ -n "$G" ]; then
    out=$(sh -c "echo \$\$ > $G/cgroup.procs; exec dd if=/dev/zero of=$DIR/podcap-dd.$$ bs=1M count=1024 oflag=direct" 2>&1)
  else
    out=$(dd if=/dev/zero of="$DIR/podcap-dd.$$" bs=1M count=2048 oflag=direct 2>&1)
  fi
  rm -f "$DIR/podcap-dd.$$"
  echo "$out" | awk -F', ' '/copied/ {split($1, b, " "); sub(/ s$/, "", $3); printf "%.0f\n", b[1] / $3 / 1e6}'
}
DD1=$(dd_rate); DD2=$(dd_rate)
DD=$(( (DD1 + DD2) / 2 ))
echo "dd oflag=direct: $DD1 and $DD2 MB/s${CAP:+ (capped at $CAP MB/s)}" >&2
# Moves the sensor started by the harness into the cgroup (ip netns exec hides
# /sys/fs/cgroup from the command it runs, so from outside).
join_cgroup() {
  [ -z "$G" ] && return
  for _ in $(seq 1 200); do
    p=$(pgrep -f "^$SENSOR --iface") && { for q in $p; do echo "$q" > "$G/cgroup.procs"; done; return; }
    sleep 0.02
  done
}
TOOLS="podcap tcpdump"; [ -n "$CAP" ] && TOOLS=podcap
echo "| traffic | disk (dd oflag=direct) | offered / disk | tool | recorded | drops: kernel / disk | achieved sender rate |"
echo "|---|---|---|---|---|---|---|"
for f in $FRACTIONS; do
  # A 1500 B frame is 1,532 bytes in a segment; TCP bulk counts payload bytes.
  pps=$(awk -v d="$DD" -v f="$f" 'BEGIN {printf "%.0f", d * 1e6 * f / 1532}')
  bps=$(awk -v d="$DD" -v f="$f" 'BEGIN {printf "%.0f", d * 8e6 * f}')
  for kind in frames tcp; do
    for tool in $TOOLS; do
      out=$(mktemp -d -p "$DIR"); log=$(mktemp)
      case $tool in
        podcap) cmd="$SENSOR --iface {IF} --data-dir {OUT} --max-size 64GB --listen 127.0.0.1:0 2>>$log" ;;
        tcpdump) cmd="tcpdump -i {IF} -w {OUT} -B 65536 -s 0" ;;
      esac
      [ "$tool" = podcap ] && join_cgroup &
      if [ "$kind" = frames ]; then
        line=$(RATE=${pps}pps OUTDIR=$out bash "$HERE/peer_capture.sh" 1500 $((pps * SECS)) "$cmd" "$tool@$f" 2>&1 | tail -1)
        recorded=$(echo "$line" | sed -n 's/.*ratio=\([0-9.]*\).*/\1/p')
        rate=$(echo "$line" | sed -n 's/.*send_pps=\([0-9,]*\).*/\1 frames\/s/p')
      else
        line=$(RATE=$bps OUTDIR=$out bash "$HERE/tcp_capture.sh" "$SECS" "$cmd" "$tool@$f" 2>&1 | tail -1)
        recorded=$(echo "$line" | sed -n 's/.*completeness=\([0-9.]*\).*/\1/p')
        rate=$(echo "$line" | sed -n 's/.*gbit_s=\([0-9.]*\).*/\1 Gbit\/s/p')
      fi
      wait
      echo "$line" >&2
      drops="-"
      if [ "$tool" = podcap ]; then
        last=$(grep -h "drops:" "$log" | tail -1)
        echo "    $last" >&2
        drops=$(echo "$last" | sed -n 's/.*kernel \([0-9]*\), ring [0-9]*, writer \([0-9]*\).*/\1 \/ \2/p')
        [ -z "$drops" ] && drops="?"
      fi
      pct=$(awk -v r="${recorded:-0}" 'BEGIN {printf "%.1f %%", r * 100}')
      echo "| $kind | ${DD} MB/s${CAP:+ (capped)} | $f | $tool | $pct | $drops | $rate |"
      rm -rf "$out" "$log"
    done
  done
done
