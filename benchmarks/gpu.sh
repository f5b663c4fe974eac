#!/usr/bin/env bash
# A benchmark on a lent GPU machine, in one call. Run from the repo root there, with gpu-kit/ (built
# by benchmarks/gpu_prepare.sh) carried:
#     bash benchmarks/gpu.sh                      # throughput.py: toxitune's loop against the notebook's
#     GPU_BENCH=quality bash benchmarks/gpu.sh    # quality.py at full scale, in parallel workers
#     GPU_BENCH=train bash benchmarks/gpu.sh      # trainers.train on the whole data, with and without CUDA graphs
#     GPU_BENCH=pruning bash benchmarks/gpu.sh    # pruning.py: LoRA studies on the whole data, median pruner and none
# On a machine without CUDA it runs the same on the CPU, which is how it is tested. Knobs:
#     GPU_BENCH_SIZES="11916"       throughput: training-set sizes (11916 = the whole split)
#     GPU_BENCH_PRECISIONS="bf16 no"  throughput: toxitune's precision ($ACCELERATE_MIXED_PRECISION), one run each
#     GPU_BENCH_GRAPHS="1 0"        throughput and train: $TOXITUNE_CUDA_GRAPHS, one run each ("0" without a GPU)
#     GPU_TRAIN_METHODS="lora odd" GPU_TRAIN_EPOCHS=2   train: methods and epochs (students distil from a
#                                   teacher fine-tuned for one epoch)
#     GPU_BENCH_REPEAT=2            throughput: passes per loop, the fastest kept (throughput.py --repeat)
#     GPU_BENCH_RUN_TIMEOUT=200     throughput and train: seconds allowed per run, so one stuck run leaves time for the rest
#     GPU_BENCH_ARGS=""             extra flags for the benchmark, e.g. "--skip-lora" or "--train-size 64"
#     GPU_QUALITY_JOBS=8 GPU_QUALITY_TRIALS=20 GPU_QUALITY_SEEDS=3   quality: its --jobs, --trials, --seeds
#     GPU_QUALITY_TIMEOUT=540       quality: seconds before it is stopped; rerun on the warm machine to resume
#     GPU_PRUNING_SEEDS=0,1,2 GPU_PRUNING_TRIALS=30 GPU_PRUNING_JOBS=6   pruning: its --seeds, --trials, --jobs
#     GPU_PRUNING_TIMEOUT=540       pruning: seconds before it is stopped; rerun on the warm machine to resume
# Writes gpu.log and throughput-gpu-SIZE-PRECISION-graphsG.json, train-METHOD-graphsG.json, quality-gpu.json (with the study journal and
# per-seed reports in quality-work.tar.gz) or pruning-gpu.json (with the studies in pruning-work.tar.gz) to $OUT (the device
# tool's folder; /tmp/toxitune-gpu-out if unset).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
KIT=gpu-kit
BENCH="${GPU_BENCH:-throughput}"
SIZES="${GPU_BENCH_SIZES:-11916}"
PRECISIONS="${GPU_BENCH_PRECISIONS:-bf16 no}"
# CUDA graphs need a GPU: on the CPU (tests of this script) the default is the one run without.
if command -v nvidia-smi >/dev/null; then GRAPHS="${GPU_BENCH_GRAPHS:-1 0}"; else GRAPHS="${GPU_BENCH_GRAPHS:-0}"; fi
# Each loop timed twice, the faster kept: a process's first pass also loads the kernels it meets first.
REPEAT="${GPU_BENCH_REPEAT:-2}"
TRAIN_METHODS="${GPU_TRAIN_METHODS:-lora odd}"
TRAIN_EPOCHS="${GPU_TRAIN_EPOCHS:-2}"
RUN_TIMEOUT="${GPU_BENCH_RUN_TIMEOUT:-200}"
OUT="${OUT:-/tmp/toxitune-gpu-out}"
# The real MiniLM weights, carried as float16; toxitune loads any checkpoint with float32 weights.
TEACHER="$KIT/teacher"
# An ignored folder of the repo: a warm machine keeps it between calls, so a cut-off run resumes.
QUALITY_WORK=bench-work/gpu-quality
PRUNING_WORK=bench-work/gpu-pruning
mkdir -p "$OUT"
# Nothing can be fetched there: fail fast on any hub look-up instead of waiting for network time-outs.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1
# Every model load prints a report and a deprecation warning; with eight workers they would bury the figures.
export TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore::FutureWarning

main() {
    [[ "$BENCH" =~ ^(throughput|quality|train|pruning)$ ]] || { echo "error: GPU_BENCH=$BENCH; use throughput, quality, train or pruning"; return 1; }
    for f in data/train.csv data/validation.csv data/test.csv teacher/config.json teacher/tokenizer.json teacher/model.safetensors; do
        [[ -f "$KIT/$f" ]] || { echo "error: $KIT/$f missing; run bash benchmarks/gpu_prepare.sh here and carry [\"gpu-kit\"]"; return 1; }
    done

    # Packages the device image lacks travel as wheels; a private target leaves its own site-packages alone.
    if compgen -G "$KIT/whl/*.whl" >/dev/null && ! python3 -c 'import optuna' 2>/dev/null; then
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$KIT"/whl/*.whl
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    python3 - <<'EOF'
import importlib, sys
names = ("torch transformers accelerate peft pandas numpy sklearn scipy yaml optuna tqdm filelock huggingface_hub "
         "safetensors tokenizers").split()
missing = []
for name in names:
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
if missing:
    sys.exit(f"error: missing Python packages {missing}; add their wheels to WHEELS in benchmarks/gpu_prepare.sh and rerun it")
import torch, transformers, accelerate, peft, optuna
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"accelerate {accelerate.__version__}, peft {peft.__version__}, optuna {optuna.__version__}")
EOF

    if command -v nvidia-smi >/dev/null; then nvidia-smi -L; else echo "nvidia-smi: not found"; fi
    python3 -c 'import torch; print("torch device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (no CUDA)")'

    case "$BENCH" in
        quality) quality ;;
        pruning) pruning ;;
        train) train_runs ;;
        *) throughput ;;
    esac
}

throughput() {
    local failed=0
    for size in $SIZES; do
        for precision in $PRECISIONS; do
            for graphs in $GRAPHS; do
                local name="throughput-gpu-$size-$precision-graphs$graphs.json"
                echo
                echo "=== throughput.py --train-size $size, toxitune with ACCELERATE_MIXED_PRECISION=$precision TOXITUNE_CUDA_GRAPHS=$graphs ==="
                # shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of flags
                if ! ACCELERATE_MIXED_PRECISION="$precision" TOXITUNE_CUDA_GRAPHS="$graphs" timeout "$RUN_TIMEOUT" \
                    python3 benchmarks/throughput.py --data "$KIT/data" --teacher "$TEACHER" --train-size "$size" \
                    --repeat "$REPEAT" --json "$OUT/$name" ${GPU_BENCH_ARGS:-}; then
                    echo "warning: the run with --train-size $size, $precision, graphs $graphs failed or passed ${RUN_TIMEOUT} s; going on"
                    failed=1
                fi
            done
        done
    done

    echo
    echo "=== summary (examples/s for distillation, steps/s for LoRA; toxitune/baseline) ==="
    python3 - "$OUT" "$SIZES" "$PRECISIONS" "$GRAPHS" <<'EOF'
import itertools, json, sys
from pathlib import Path
out, sizes, precisions, graphs = Path(sys.argv[1]), *(arg.split() for arg in sys.argv[2:])
for size, precision, graphed in itertools.product(sizes, precisions, graphs):
    path = out / f"throughput-gpu-{size}-{precision}-graphs{graphed}.json"
    if not path.exists():
        print(f"train-size {size}, {precision}, graphs {graphed}: no figures ({path.name} missing)")
        continue
    f = json.loads(path.read_text())
    device = f["machine"]["cuda"] or "CPU"
    line = (f"train-size {f['train_size']} on {device}, toxitune {precision}, graphs {graphed}: distillation baseline "
            f"{f['baseline']:.1f}, toxitune {f['toxitune']:.1f} ex/s, ratio {f['ratio']:.2f}x")
    if "lora" in f:
        lora = f["lora"]
        line += f"; LoRA baseline {lora['baseline']:.2f}, toxitune {lora['toxitune']:.2f} steps/s, ratio {lora['ratio']:.2f}x"
    print(line)
EOF
    return "$failed"
}

train_runs() {
    # What a user runs, with and without graphs: same data, seed and config, so only the step differs.
    local failed=0
    for method in $TRAIN_METHODS; do
        for graphs in $GRAPHS; do
            local run="bench-work/gpu-train/$method-graphs$graphs" started=$SECONDS
            echo
            echo "=== trainers.train --method $method --epochs $TRAIN_EPOCHS, TOXITUNE_CUDA_GRAPHS=$graphs ==="
            # shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of flags
            if TOXITUNE_CUDA_GRAPHS="$graphs" timeout "$RUN_TIMEOUT" python3 -m trainers.train --method "$method" \
                --dataset "$KIT/data" --teacher "$TEACHER" --teacher-epochs 1 --epochs "$TRAIN_EPOCHS" \
                --cache-dir bench-work/gpu-train/cache --out "$run" --no-progress ${GPU_BENCH_ARGS:-}; then
                python3 - "$run/metrics.json" "$((SECONDS - started))" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
best = m["best"]
print(f"{m['method']}, graphs {m['device']['cuda_graphs']}, {m['device']['precision']}: {m['status']}, {m['steps']} steps "
      f"in {m['seconds']} s of training ({sys.argv[2]} s with start-up and test); best at epoch {best['epoch']:.2f}: "
      f"train loss {best['train_loss']:.4f}, validation macro-F1 {m['validation']['macro_f1']:.4f}; "
      f"test macro-F1 {m['test']['macro_f1']:.4f}, accuracy {m['test']['accuracy']:.4f}")
print("  train loss at each evaluation: " + ", ".join(f"{r['train_loss']:.4f}" for r in m["history"]))
print("  validation macro-F1 at each evaluation: " + ", ".join(f"{r['validation']['macro_f1']:.4f}" for r in m["history"]))
EOF
                cp "$run/metrics.json" "$OUT/train-$method-graphs$graphs.json"
            else
                echo "warning: trainers.train --method $method with graphs $graphs failed or passed ${RUN_TIMEOUT} s; going on"
                failed=1
            fi
        done
    done
    return "$failed"
}

quality() {
    local jobs="${GPU_QUALITY_JOBS:-8}" trials="${GPU_QUALITY_TRIALS:-20}" seeds="${GPU_QUALITY_SEEDS:-3}"
    local started=$SECONDS rc=0
    echo
    echo "=== quality.py --jobs $jobs --trials $trials --seeds $seeds (resuming whatever $QUALITY_WORK holds) ==="
    # shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of flags
    timeout "${GPU_QUALITY_TIMEOUT:-540}" python3 benchmarks/quality.py --data "$KIT/data" --teacher "$TEACHER" \
        --jobs "$jobs" --trials "$trials" --seeds "$seeds" --workdir "$QUALITY_WORK" \
        --json "$OUT/quality-gpu.json" ${GPU_BENCH_ARGS:-} || rc=$?
    # The studies and every finished run's report come back; models and caches stay there.
    report_resumable quality.py "$rc" "$started" "$QUALITY_WORK" "$OUT/quality-work.tar.gz" \
        \( -path '*/runs/*.json' -o -name quality.log \)
}

pruning() {
    # The CPU sections' LoRA workload (RESULTS.md) on the whole data: every (seed, arm) study in its own
    # process, so each draws what it would alone, all of them sharing the GPU.
    local jobs="${GPU_PRUNING_JOBS:-6}" trials="${GPU_PRUNING_TRIALS:-30}" seeds="${GPU_PRUNING_SEEDS:-0,1,2}"
    local started=$SECONDS rc=0
    echo
    echo "=== pruning.py --method lora --trials $trials --seeds $seeds --arms median,none --jobs $jobs (resuming whatever $PRUNING_WORK holds) ==="
    # shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of flags; later flags win
    timeout "${GPU_PRUNING_TIMEOUT:-540}" python3 benchmarks/pruning.py --data "$KIT/data" --teacher "$TEACHER" \
        --method lora --epochs 3 --evals-per-epoch 4 --batch-size 32 --trials "$trials" --seeds "$seeds" \
        --arms median,none --jobs "$jobs" --workdir "$PRUNING_WORK" --json "$OUT/pruning-gpu.json" \
        ${GPU_BENCH_ARGS:-} || rc=$?
    report_resumable pruning.py "$rc" "$started" "$PRUNING_WORK" "$OUT/pruning-work.tar.gz" -name '*.db'
}

report_resumable() {
    # report_resumable NAME RC STARTED WORK ARCHIVE FIND-TEST...: a benchmark that resumes from WORK
    # exited RC; say so, and pack the files of WORK that FIND-TEST picks into ARCHIVE, one file because
    # the device tool leaves out files more than a folder or two below $OUT.
    local name=$1 rc=$2 started=$3 work=$4 archive=$5
    shift 5
    echo "$name: exit $rc after $((SECONDS - started)) s"
    if ((rc == 124)); then
        echo "cut off: rerun the same call while the machine is warm; it resumes from $work"
    fi
    if [[ -d "$work" ]]; then
        (cd "$work" && find . "$@" -print0 | tar -czf "$archive" --null -T -)
    fi
    return "$rc"
}

main 2>&1 | tee "$OUT/gpu.log"
