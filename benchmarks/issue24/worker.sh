#!/bin/bash
# claims the next line of q/jobs.txt (flock on q/next) and runs it; exits when none left
cd /work/m24
while true; do
  exec 9>q/lock; flock 9
  n=$(cat q/next 2>/dev/null || echo 0); total=$(grep -c . q/jobs.txt)
  if [ "$n" -ge "$total" ]; then flock -u 9; sleep 20; [ -f q/stop ] && exit 0; continue; fi
  echo $((n+1)) > q/next; flock -u 9
  line=$(sed -n "$((n+1))p" q/jobs.txt)
  echo "$(date -u +%T) W$1 start $((n+1)): $line" >> q/worker.log
  bash -c "source lib.sh; $line"; rc=$?
  echo "$(date -u +%T) W$1 done $((n+1)) rc=$rc" >> q/worker.log
done
