#!/bin/bash
cd /work/bench-peer
while pgrep -f "arms27c.sh" >/dev/null; do sleep 15; done
R=/work/runs27
step() { local t0=$(date +%s); echo "=== $(date +%T) start :: $*"; "$@"; echo "=== rc=$? secs=$(( $(date +%s)-t0 )) :: $*"; }
cp $R/tteacher-hidden/studies.db $R/two-tt.db
python -c "import optuna; optuna.delete_study(study_name='odd-tweeteval-hidden', storage='sqlite:///$R/two-tt.db')"
step python -m search.run --method distil --student-depth 2 --preset benchmarks/presets/tweeteval-hidden.toml --teacher-from teacher-tweeteval --train-size 1500 --trials 8 --no-progress --storage sqlite:///$R/two-tt.db
step python -m search.export --study distil-tweeteval-hidden --storage sqlite:///$R/two-tt.db --out $R/two-tt-best.yaml
step python -m search.train --config $R/two-tt-best.yaml --seeds 3 --out $R/two-tt-hidden --no-progress
mkdir -p $R/tteacher-logits && cp $R/tteacher-hidden/studies.db $R/tteacher-logits/studies.db
python -c "import optuna; optuna.delete_study(study_name='odd-tweeteval-hidden', storage='sqlite:///$R/tteacher-logits/studies.db')"
step python -m search.experiment --methods odd --preset tweeteval --teacher-from teacher-tweeteval --train-size 1500 --trials 8 --seeds 3 --no-progress --out $R/tteacher-logits
echo "=== all done $(date +%T)"
