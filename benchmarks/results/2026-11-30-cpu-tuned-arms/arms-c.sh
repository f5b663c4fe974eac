#!/bin/bash
cd /work/bench-peer
while pgrep -f "arms27b.sh" >/dev/null; do sleep 15; done
R=/work/runs27
step() { local t0=$(date +%s); echo "=== $(date +%T) start :: $*"; "$@"; echo "=== rc=$? secs=$(( $(date +%s)-t0 )) :: $*"; }
mkdir -p $R/tteacher-ens3-hidden && cp $R/tteacher-hidden/studies.db $R/tteacher-ens3-hidden/studies.db
python -c "import optuna; optuna.delete_study(study_name='odd-tweeteval-hidden', storage='sqlite:///$R/tteacher-ens3-hidden/studies.db')"
step python -m search.experiment --methods odd --preset benchmarks/presets/tweeteval-hidden.toml --teacher-from teacher-tweeteval --teacher-ensemble 3 --train-size 1500 --trials 8 --seeds 3 --no-progress --out $R/tteacher-ens3-hidden
echo "=== all done $(date +%T)"
