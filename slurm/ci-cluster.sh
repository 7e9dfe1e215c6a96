#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine for Likeness's tests (make slurm), as
# PostgreSQL and Redis are started: Debian's slurm-wlm and munge, slurmctld and slurmd on
# localhost, state under $LIKENESS_SLURM_DIR. Idempotent: a cluster already up is left
# alone. Clients find it through SLURM_CONF=$LIKENESS_SLURM_DIR/slurm.conf (the Makefile's
# test environment sets it). Needs root (apt, munged, slurmd).
set -euo pipefail
DIR=${LIKENESS_SLURM_DIR:-/var/tmp/likeness-slurm}
export SLURM_CONF=$DIR/slurm.conf
HERE=$(cd "$(dirname "$0")" && pwd)

ours_running() {  # both daemons of ours alive (slurmctld notices a dead slurmd only later)
  for daemon in slurmctld slurmd; do
    kill -0 "$(cat "$DIR/$daemon.pid" 2>/dev/null || echo none)" 2>/dev/null || return 1
  done
}
if [ -f "$SLURM_CONF" ] && ours_running && scontrol ping 2>/dev/null | grep -q UP \
   && sinfo --noheader --format=%T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "slurm/ci-cluster.sh installs packages and starts munged and slurmd: run it as root" >&2
  exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge authenticates every SLURM message; Debian's package made the key.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  mkdir -p /run/munge && chown munge:munge /run/munge
  su -s /bin/sh munge -c /usr/sbin/munged
fi

mkdir -p "$DIR"/state "$DIR"/spool "$DIR"/log
sed -e "s#@DIR@#$DIR#g" -e "s#@USER@#$(id -un)#g" \
    -e "s#@CTLD_PORT@#${LIKENESS_SLURMCTLD_PORT:-6817}#g" \
    -e "s#@SLURMD_PORT@#${LIKENESS_SLURMD_PORT:-6818}#g" \
    "$HERE/ci-slurm.conf" > "$SLURM_CONF"
# Ours from an earlier start (by their pid files; never a site's own daemons), stopped so
# they restart on the fresh config.
for daemon in slurmctld slurmd; do
  pid=$(cat "$DIR/$daemon.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
done
slurmctld
slurmd -N localhost
for _ in $(seq 60); do
  if sinfo --noheader --format=%T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'; then
    exit 0
  fi
  # A node left down by an earlier, unclean stop comes back once resumed.
  scontrol update nodename=localhost state=resume 2>/dev/null || true
  sleep 1
done
echo "SLURM did not come up: see $DIR/log/slurmctld.log and $DIR/log/slurmd.log" >&2
exit 1
