#!/bin/bash
# Runs inside the booted container as taominer-check.service (tests/tests/systemd_boot.rs) and
# writes one line per check to /result/report: `PASS name` or `FAIL name: why`, then `DONE`.
set -u
report=/result/report
: > "$report"
pass() { echo "PASS $1" >> "$report"; }
fail() { echo "FAIL $1: $(echo "$2" | tr '\n' ' ' | cut -c1-600)" >> "$report"; }
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "$(cat /tmp/why 2>/dev/null)"; fi; rm -f /tmp/why; }
units="miner-publisher miner-committer miner-trainer miner-predictor"
ctl() { /usr/local/bin/minerctl --bus system "$@"; }
active() { # unit [tenths of seconds]
  for _ in $(seq 1 "${2:-300}"); do
    [ "$(systemctl is-active "$1")" = active ] && return 0
    sleep 0.1
  done
  systemctl status "$1" --no-pager > /tmp/why 2>&1
  return 1
}
restarts() { systemctl show -p NRestarts --value "$1"; }
committed() { # job id, tenths of seconds
  for _ in $(seq 1 "${2:-600}"); do
    ctl jobs --json > /tmp/jobs 2>&1
    tr -d '\n ' < /tmp/jobs | grep -q "\"id\":\"$1\"[^}]*\"state\":\"committed\"" && return 0
    sleep 0.1
  done
  cp /tmp/jobs /tmp/why
  return 1
}

systemctl start miner.target
for u in $units; do check "$u active after READY" active "$u"; done
for u in $units; do
  st=$(systemctl show -p StatusText --value "$u")
  if [ -n "$st" ]; then pass "$u status text ($st)"; else fail "$u status text" "empty"; fi
done

# One user per daemon (units/taominer.sysusers), as its unit says.
for p in publisher committer trainer predictor; do
  check "miner-$p runs as taominer-$p" bash -c "u=\$(stat -c %U /proc/\$(systemctl show -p MainPID --value miner-$p)); [ \"\$u\" = taominer-$p ] || { echo \"runs as \$u\" > /tmp/why; false; }"
done
check "the publisher's user can read the trainer's state" bash -c "setpriv --reuid=taominer-publisher --regid=taominer --init-groups ls /var/lib/taominer/trainer > /tmp/why 2>&1"

systemctl stop miner-trainer
check "systemctl start miner-trainer" bash -c 'systemctl start miner-trainer && [ "$(systemctl is-active miner-trainer)" = active ] || { systemctl status miner-trainer --no-pager > /tmp/why 2>&1; false; }'

# A job through minerctl publish; the publisher's journal carries its structured fields.
job1=$(ctl publish /srv/model1 --wait 60 2>/tmp/publish1)
check "minerctl publish committed" bash -c "[ -n '$job1' ] || { cat /tmp/publish1 > /tmp/why; false; }"
journalctl -u miner-publisher -o json --no-pager > /tmp/journal.json
cp /tmp/journal.json /result/publisher.json
check "journal: SYSLOG_IDENTIFIER=miner-publisher" grep -q '"SYSLOG_IDENTIFIER":"miner-publisher"' /tmp/journal.json
check "journal: JOB_ID of the job" grep -q "\"JOB_ID\":\"$job1\"" /tmp/journal.json

# kill -9 of the committer while a job is handed to it: systemd restarts it and the job completes.
before=$(restarts miner-committer)
job2=$(ctl publish /srv/model2 2>/tmp/publish2)
kill -9 "$(systemctl show -p MainPID --value miner-committer)"
check "committer restarted after kill -9" bash -c "for i in \$(seq 1 300); do [ \"\$(systemctl show -p NRestarts --value miner-committer)\" -gt $before ] && [ \"\$(systemctl is-active miner-committer)\" = active ] && exit 0; sleep 0.1; done; systemctl status miner-committer --no-pager > /tmp/why 2>&1; exit 1"
check "the job handed over the kill completes" committed "$job2" 600

# A daemon frozen with SIGSTOP misses its watchdog pings: systemd kills and restarts it.
before=$(restarts miner-trainer)
kill -STOP "$(systemctl show -p MainPID --value miner-trainer)"
check "watchdog restarts a frozen trainer" bash -c "for i in \$(seq 1 400); do [ \"\$(systemctl show -p NRestarts --value miner-trainer)\" -gt $before ] && [ \"\$(systemctl is-active miner-trainer)\" = active ] && exit 0; sleep 0.1; done; systemctl status miner-trainer --no-pager > /tmp/why 2>&1; exit 1"
check "the journal says why" bash -c "journalctl -u miner-trainer --no-pager | grep -q 'Watchdog timeout' || { journalctl -u miner-trainer --no-pager | tail -20 > /tmp/why; false; }"

# Stopping the target stops everything on SIGTERM, with no SIGKILL.
since=$(date '+%Y-%m-%d %H:%M:%S')
sleep 1
systemctl stop miner.target
for u in $units; do
  check "$u stopped cleanly" bash -c "[ \"\$(systemctl is-active $u)\" != active ] && [ \"\$(systemctl show -p Result --value $u)\" = success ] || { systemctl status $u --no-pager > /tmp/why 2>&1; false; }"
done
journalctl --since "$since" --no-pager > /tmp/stop.log
check "no SIGKILL on stop" bash -c "! grep -E 'SIGKILL|Killing process|timed out' /tmp/stop.log > /tmp/why"
journalctl -b --no-pager > /result/journal.txt 2>&1
echo DONE >> "$report"
