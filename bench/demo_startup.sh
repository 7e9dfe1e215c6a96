#!/usr/bin/env bash
# How soon `make run` gives a usable dashboard on a fresh clone (issue 19): seconds from the
# start to the install finishing, the front page answering, the first score on it, and every
# demo run done. Wall-clock milestones, not a ratio: there is no baseline to run beside it.
#   bash bench/demo_startup.sh [PORT]   (clones this checkout's HEAD into a fresh folder)
# Leaves `make run` running; stop it with: pkill -f "$folder" (the folder is printed).
set -u
port=${1:-8123}
folder=$(mktemp -d /tmp/likeness-startup-XXXX)
git clone -q "$(git rev-parse --show-toplevel)" "$folder" && cd "$folder" || exit 1
echo "fresh clone in $folder"
start=$(date +%s.%N)
( make run PORT="$port" > "$folder/make-run.log" 2>&1 & )
stamp() { echo "$1 $(echo "$(date +%s.%N) - $start" | bc)"; }
until [ -f .venv/.installed ]; do sleep 1; done; stamp installed
until curl -sf http://127.0.0.1:$port/leaderboards/ -o /dev/null; do sleep 1; done; stamp page_answers
until curl -sf http://127.0.0.1:$port/leaderboards/ | grep -q 'class="score"'; do sleep 1; done; stamp first_score
until python3 - <<'PY'
import sqlite3,sys
c=sqlite3.connect('var/likeness.sqlite3')
rows=c.execute("select status from evaluation_run").fetchall()
sys.exit(0 if rows and all(r[0] in ('succeeded','failed','partly_failed','cancelled') for r in rows) else 1)
PY
do sleep 2; done; stamp all_runs_done
python3 -c "
import sqlite3;c=sqlite3.connect('var/likeness.sqlite3');print(c.execute('select id,status from evaluation_run').fetchall())"
