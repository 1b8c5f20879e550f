#!/usr/bin/env bash
# Runs a command and samples its resident set size until it ends.
# usage: rss_sample.sh LOG INTERVAL_SECONDS CMD [ARGS...]
# Appends "seconds_since_start rss_kib" to LOG every INTERVAL seconds; a TERM or INT sent to
# this script saves the command's /proc/PID/smaps as LOG.smaps (where the memory is), then
# is passed on to the command, which is then waited for.
set -u
LOG=$1; INTERVAL=$2; shift 2
"$@" &
PID=$!
trap 'cp /proc/$PID/smaps "$LOG.smaps" 2>/dev/null; kill -TERM $PID 2>/dev/null' TERM INT
START=$(date +%s)
while kill -0 $PID 2>/dev/null; do
  RSS=$(awk '/^VmRSS:/ {print $2}' /proc/$PID/status 2>/dev/null)
  [ -n "$RSS" ] && echo "$(( $(date +%s) - START )) $RSS" >> "$LOG"
  sleep "$INTERVAL" & wait $!
done
wait $PID
