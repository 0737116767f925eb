#!/bin/bash
# Alternate old / new processes K times; each writes a JSON line.
K=${K:-4}
rm -f /tmp/ab/old.jsonl /tmp/ab/new.jsonl
for k in $(seq $K); do
  for side in old new; do
    if [ $side = old ]; then PY=/tmp/venv_old/bin/python; D=/tmp; else PY=/work/venv/bin/python; D=/tmp; fi
    (cd $D && $PY /tmp/ab/e2e_one.py >> /tmp/ab/$side.jsonl)
  done
  echo "round $k $(head -1 /proc/pressure/cpu)"
done
