#!/bin/bash
# Issue 27's tuned arms at 1,500 tweets, one after another, after the docs peer.
cd /work/bench-peer
while pgrep -f "benchmarks/peer.py" >/dev/null; do sleep 20; done
R=/work/runs27
step() { local t0=$(date +%s); echo "=== $(date +%T) start :: $*"; "$@"; echo "=== rc=$? secs=$(( $(date +%s)-t0 )) :: $*"; }
C="--train-size 1500 --trials 8 --seeds 3 --no-progress"
step python -m search.experiment --methods odd --preset benchmarks/presets/tweeteval-hidden.toml $C --out $R/hidden
step python benchmarks/results/2026-11-30-cpu-pareto-32/winners.py
step python -m search.train --config /work/bench-runs/winners/odd.yaml --seeds 3 --out $R/odd-logits --no-progress
step python -m search.train --config /work/bench-runs/winners/lora.yaml --seeds 3 --out $R/lora-tuned --no-progress
step python -m search.experiment --methods odd --preset benchmarks/presets/tweeteval-hidden.toml --teacher-ensemble 3 $C --out $R/ens3-hidden
step python -m search.run --method distil --student-depth 2 --preset benchmarks/presets/tweeteval-hidden.toml --train-size 1500 --trials 8 --no-progress --storage sqlite:///$R/two.db
step python -m search.export --study distil-tweeteval-hidden --storage sqlite:///$R/two.db --out $R/two-best.yaml
step python -m search.train --config $R/two-best.yaml --seeds 3 --out $R/two-hidden --no-progress
step python -m search.experiment --methods odd --preset benchmarks/presets/tweeteval-attention.toml $C --out $R/attn
mkdir -p $R/tteacher-hidden
step python -m search.run --method teacher --preset tweeteval --train-size 1500 --trials 5 --no-progress --storage sqlite:///$R/tteacher-hidden/studies.db
step python -m search.experiment --methods odd --preset benchmarks/presets/tweeteval-hidden.toml --teacher-from teacher-tweeteval $C --out $R/tteacher-hidden
echo "=== all done $(date +%T)"
