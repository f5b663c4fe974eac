#!/bin/bash
cd /work/bench-peer
while pgrep -f "arms27.sh" >/dev/null; do sleep 15; done
R=/work/runs27
step() { local t0=$(date +%s); echo "=== $(date +%T) start :: $*"; "$@"; echo "=== rc=$? secs=$(( $(date +%s)-t0 )) :: $*"; }
C="--train-size 1500 --trials 8 --seeds 3 --no-progress"
step python -m search.experiment --methods odd --preset benchmarks/presets/tweeteval-hidden.toml $C --out $R/hidden
step python -m search.experiment --methods odd --preset benchmarks/presets/tweeteval-hidden.toml --teacher-ensemble 3 $C --out $R/ens3-hidden
step python -m search.run --method distil --student-depth 2 --preset benchmarks/presets/tweeteval-hidden.toml --train-size 1500 --trials 8 --no-progress --storage sqlite:///$R/two.db
step python -m search.export --study distil-tweeteval-hidden --storage sqlite:///$R/two.db --out $R/two-best.yaml
step python -m search.train --config $R/two-best.yaml --seeds 3 --out $R/two-hidden --no-progress
step python -m search.experiment --methods odd --preset benchmarks/presets/tweeteval-attention.toml $C --out $R/attn
echo "=== all done $(date +%T)"
