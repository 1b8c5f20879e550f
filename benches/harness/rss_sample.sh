#!/usr/bin/env bash
# Runs a command in a memory cgroup of its own and samples its memory until it ends.
# usage: rss_sample.sh LOG INTERVAL_SECONDS CMD [ARGS...]
# Appends "seconds_since_start rss_kib cgroup_kib page_cache_kib" to LOG every INTERVAL
# seconds: the command's resident set, and what its cgroup is charged (page cache
# included, as a pod's memory limit counts it) and of that the page cache (cgroup v1's
# memory controller, else v2's; 0 0 where neither is available). A TERM or INT sent to
# this script saves the command's /proc/PID/smaps as LOG.smaps (where the memory is), then
# is passed on to the command, which is then waited for. The cgroup is removed at the end.
set -u
LOG=$1; INTERVAL=$2; shift 2
CG=""; USAGE=""; CACHE=""; MOUNTED=""
# `ip netns exec` remounts /sys without the cgroup file systems: then the memory
# controller's hierarchy is mounted again here (this mount namespace only).
CGFS=/sys/fs/cgroup
if [ ! -d $CGFS/memory ] && [ ! -f $CGFS/cgroup.controllers ]; then
  MOUNTED=$(mktemp -d)
  if mount -t cgroup -o memory podcap-memory "$MOUNTED" 2>/dev/null; then
    CGV1=$MOUNTED
  elif mount -t cgroup2 podcap-memory "$MOUNTED" 2>/dev/null; then
    CGV2=$MOUNTED
  fi
fi
if [ -n "${CGV1:-}" ] || [ -f $CGFS/memory/memory.usage_in_bytes ]; then
  CG=${CGV1:-$CGFS/memory}/podcap-rss-$$; USAGE=memory.usage_in_bytes; CACHE=cache
elif grep -qw memory ${CGV2:-$CGFS}/cgroup.subtree_control 2>/dev/null; then
  CG=${CGV2:-$CGFS}/podcap-rss-$$; USAGE=memory.current; CACHE=file
fi
# The cgroup goes at the end, then the mount made for it.
trap 'rmdir "$CG" 2>/dev/null; [ -n "$MOUNTED" ] && { umount "$MOUNTED" 2>/dev/null; rmdir "$MOUNTED"; }' EXIT
if [ -n "$CG" ] && mkdir "$CG" 2>/dev/null; then
  bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG" "$@" &
else
  CG=""
  "$@" &
fi
PID=$!
trap 'cp /proc/$PID/smaps "$LOG.smaps" 2>/dev/null; kill -TERM $PID 2>/dev/null' TERM INT
START=$(date +%s)
while kill -0 $PID 2>/dev/null; do
  RSS=$(awk '/^VmRSS:/ {print $2}' /proc/$PID/status 2>/dev/null)
  CHARGED=0; PAGE_CACHE=0
  if [ -n "$CG" ]; then
    CHARGED=$(( $(cat "$CG/$USAGE" 2>/dev/null || echo 0) / 1024 ))
    PAGE_CACHE=$(awk -v k="$CACHE" '$1 == k {print int($2 / 1024)}' "$CG/memory.stat" 2>/dev/null)
  fi
  [ -n "$RSS" ] && echo "$(( $(date +%s) - START )) $RSS $CHARGED ${PAGE_CACHE:-0}" >> "$LOG"
  sleep "$INTERVAL" & wait $!
done
wait $PID
