#!/usr/bin/env bash
# Completeness at offered rates that are fixed fractions of the disk's own rate (issue #31):
# the store on a disk-backed file system, trafgen 1500 B frames and iperf3 TCP bulk paced
# to 0.5, 0.8, 0.9 and 1.2 of `dd bs=1M oflag=direct` on the same file system (measured
# in this run), each run SECONDS long; podcap with direct writes (the default), podcap
# --buffered-writes and tcpdump -w side by side.
# usage: disk_rates.sh SENSOR DIR SECONDS [CAP_MB_S ...]
# Each CAP_MB_S is a disk: "" (or none given) the disk as it is, a figure a slower disk: the sensor (and dd, to
# measure it) run in a blkio cgroup whose throttle.write_bps_device caps their direct
# writes. cgroup v1 does not throttle page-cache writeback, so buffered writers
# (--buffered-writes, tcpdump) are left out of capped runs.
# Every capture tool runs in a memory cgroup of its own: "memory" is its peak charge
# (memory.max_usage_in_bytes: anonymous memory and the page cache it dirtied, from when it
# joined, within ~0.1 s of its start, before the traffic; this kernel refuses
# move_charge_at_immigrate, so the little charged before stays outside).
# Env: FRACTIONS (default "0.5 0.8 0.9 1.2"), KINDS (default "frames tcp").
# Prints one markdown table per disk; every harness line goes to stderr.
set -u
SENSOR=$1; DIR=$2; SECS=$3; shift 3
CAPS=("$@"); [ ${#CAPS[@]} -eq 0 ] && CAPS=("")
FRACTIONS=${FRACTIONS:-0.5 0.8 0.9 1.2}
KINDS=${KINDS:-frames tcp}
HERE=$(cd "$(dirname "$0")" && pwd)
DEV=$(findmnt -no MAJ:MIN -T "$DIR")
BLKIO=/sys/fs/cgroup/blkio/podcap-disk-rates-$$
MEMORY=/sys/fs/cgroup/memory/podcap-disk-rates-$$
leave_cgroup() {
  local g=$1 root=$2
  [ -d "$g" ] || return 0
  for p in $(cat "$g/cgroup.procs" 2>/dev/null); do echo "$p" > "$root/cgroup.procs" 2>/dev/null; done
  rmdir "$g" 2>/dev/null
}
cleanup() {
  leave_cgroup "$BLKIO" /sys/fs/cgroup/blkio
  leave_cgroup "$MEMORY" /sys/fs/cgroup/memory
  rm -f "$DIR/podcap-dd.$$"
}
trap cleanup EXIT
mkdir -p "$MEMORY"

# dd's rate in MB/s (in the blkio cgroup when capped).
dd_rate() {
  local cap=$1 out
  if [ -n "$cap" ]; then
    out=$(sh -c "echo \$\$ > $BLKIO/cgroup.procs; exec dd if=/dev/zero of=$DIR/podcap-dd.$$ bs=1M count=1024 oflag=direct" 2>&1)
  else
    out=$(dd if=/dev/zero of="$DIR/podcap-dd.$$" bs=1M count=2048 oflag=direct 2>&1)
  fi
  rm -f "$DIR/podcap-dd.$$"
  echo "$out" | awk -F', ' '/copied/ {split($1, b, " "); sub(/ s$/, "", $3); printf "%.0f\n", b[1] / $3 / 1e6}'
}

# Moves the capture command the harness started (matched by PATTERN) into the memory
# cgroup and, when capped, the blkio one (ip netns exec hides /sys/fs/cgroup from the
# command it runs, so from outside).
join_cgroups() {
  local pattern=$1 cap=$2 p q
  for _ in $(seq 1 200); do
    p=$(pgrep -f "$pattern") && {
      for q in $p; do
        echo "$q" > "$MEMORY/cgroup.procs"
        [ -n "$cap" ] && echo "$q" > "$BLKIO/cgroup.procs"
      done
      return
    }
    sleep 0.02
  done
}

for CAP in "${CAPS[@]}"; do
  if [ -n "$CAP" ]; then
    mkdir -p "$BLKIO"
    echo "$DEV $((CAP * 1000000))" > "$BLKIO/blkio.throttle.write_bps_device"
    TOOLS="podcap"
  else
    TOOLS="podcap podcap-buffered tcpdump"
  fi
  DD1=$(dd_rate "$CAP"); DD2=$(dd_rate "$CAP")
  DD=$(( (DD1 + DD2) / 2 ))
  echo "dd oflag=direct: $DD1 and $DD2 MB/s${CAP:+ (capped at $CAP MB/s)}" >&2
  echo
  echo "| traffic | disk (dd oflag=direct) | offered / disk | tool | recorded | drops: kernel / disk | sender rate (of offered) | busy CPU | written | memory (peak) |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  unreached=
  for f in $FRACTIONS; do
    # A 1500 B frame is 1,532 bytes in a segment; TCP bulk counts payload bytes.
    pps=$(awk -v d="$DD" -v f="$f" 'BEGIN {printf "%.0f", d * 1e6 * f / 1532}')
    bps=$(awk -v d="$DD" -v f="$f" 'BEGIN {printf "%.0f", d * 8e6 * f}')
    for kind in $KINDS; do
      # A sender that fell short of a lower rate would offer the same again: said once.
      case " $unreached " in *" $kind "*)
        echo "| $kind | ${DD} MB/s${CAP:+ (capped)} | $f | - | not offered: the sender fell short of a lower rate | - | - | - | - | - |"
        continue ;;
      esac
      # A run keeps all it records (tcpdump -w and a 64 GB store): it needs room for the
      # offered rate over the whole run, or the disk fills and the row measures that.
      need=$(awk -v d="$DD" -v f="$f" -v s="$SECS" 'BEGIN {printf "%.0f", d * 1e6 * f * s * 1.15}')
      free=$(df -B1 --output=avail "$DIR" | tail -1)
      if [ "$free" -lt "$need" ]; then
        echo "| $kind | ${DD} MB/s${CAP:+ (capped)} | $f | - | not run: $DIR has $((free / 1000000000)) GB free, the run needs $((need / 1000000000)) GB | - | - | - | - | - |"
        echo "not run: $kind at $f needs $need bytes, $DIR has $free free" >&2
        continue
      fi
      for tool in $TOOLS; do
        out=$(mktemp -d -p "$DIR"); log=$(mktemp)
        case $tool in
          podcap) cmd="$SENSOR --iface {IF} --data-dir {OUT} --max-size 64GB --listen 127.0.0.1:0 2>>$log"; pattern="^$SENSOR --iface" ;;
          podcap-buffered) cmd="$SENSOR --iface {IF} --data-dir {OUT} --max-size 64GB --listen 127.0.0.1:0 --buffered-writes 2>>$log"; pattern="^$SENSOR --iface" ;;
          tcpdump) cmd="tcpdump -i {IF} -w {OUT} -B 65536 -s 0"; pattern="^tcpdump -i" ;;
        esac
        echo 0 > "$MEMORY/memory.max_usage_in_bytes" 2>/dev/null
        join_cgroups "$pattern" "$CAP" &
        if [ "$kind" = frames ]; then
          line=$(RATE=${pps}pps OUTDIR=$out bash "$HERE/peer_capture.sh" 1500 $((pps * SECS)) "$cmd" "$tool@$f" 2>&1 | tail -1)
          recorded=$(echo "$line" | sed -n 's/.*ratio=\([0-9.]*\).*/\1/p')
          achieved=$(echo "$line" | sed -n 's/.*send_pps=\([0-9,]*\).*/\1/p' | tr -d ,)
          rate=$(awk -v a="${achieved:-0}" -v o="$pps" 'BEGIN {printf "%\047d frames/s (%.2f)", a, a / o}')
          cpu=$(echo "$line" | sed -n 's/.*cpu_us_per_frame=\([0-9.]*\).*/\1 µs\/frame/p')
          # Over the time trafgen sent (sent / send_pps).
          captured=$(echo "$line" | sed -n 's/.*captured=\([0-9]*\).*/\1/p')
          written=$(awk -v c="${captured:-0}" -v a="${achieved:-0}" -v n="$((pps * SECS))" 'BEGIN {printf "%.0f MB/s", c * 1532 * a / n / 1e6}')
        else
          line=$(RATE=$bps OUTDIR=$out bash "$HERE/tcp_capture.sh" "$SECS" "$cmd" "$tool@$f" 2>&1 | tail -1)
          recorded=$(echo "$line" | sed -n 's/.*completeness=\([0-9.]*\).*/\1/p')
          achieved=$(echo "$line" | sed -n 's/.*gbit_s=\([0-9.]*\).*/\1/p')
          rate=$(awk -v a="${achieved:-0}" -v o="$bps" 'BEGIN {printf "%.2f Gbit/s (%.2f)", a, a * 1e9 / o}')
          cpu=$(echo "$line" | sed -n 's/.*cpu_s_per_gb=\([0-9.]*\).*/\1 s\/GB/p')
          written=$(echo "$line" | sed -n 's/.*captured_payload=\([0-9]*\).*/\1/p' | awk -v s="$SECS" '{printf "%.0f MB/s", $1 / s / 1e6}')
        fi
        wait
        peak=$(awk '{printf "%.0f MiB", $1 / 1048576}' "$MEMORY/memory.max_usage_in_bytes")
        echo "$line (memory peak $peak)" >&2
        drops="-"
        if [ "$tool" != tcpdump ]; then
          last=$(grep -h "drops:" "$log" | tail -1)
          echo "    $last" >&2
          drops=$(echo "$last" | sed -n 's/.*kernel \([0-9]*\), ring [0-9]*, writer \([0-9]*\).*/\1 \/ \2/p')
          [ -z "$drops" ] && drops="?"
        fi
        pct=$(awk -v r="${recorded:-0}" 'BEGIN {printf "%.1f %%", r * 100}')
        echo "| $kind | ${DD} MB/s${CAP:+ (capped)} | $f | $tool | $pct | $drops | $rate | ${cpu:-?} | ${written:-?} | $peak |"
        rm -rf "$out" "$log"
        if [ "$tool" = podcap ] && awk -v r="$rate" 'BEGIN {split(r, a, "("); exit !(a[2] + 0 < 0.9)}'; then
          unreached="$unreached $kind"
        fi
        # What the run dirtied goes to the disk before the next one starts.
        sync
      done
    done
  done
  leave_cgroup "$BLKIO" /sys/fs/cgroup/blkio
done
