#!/usr/bin/env bash
# The throughput benchmark on a lent GPU machine, in one call. Run from the repo root there, with
# gpu-kit/ (built by benchmarks/gpu_prepare.sh) carried:
#     bash benchmarks/gpu.sh
# On a machine without CUDA it runs the same on the CPU, which is how it is tested. Knobs:
#     GPU_BENCH_SIZES="1024 11916"  training-set sizes, one throughput.py run each (11916 = the whole split)
#     GPU_BENCH_RUN_TIMEOUT=240     seconds allowed per run, so one stuck run leaves time for the rest
#     GPU_BENCH_ARGS=""             extra throughput.py flags, e.g. "--skip-lora"
# Writes gpu.log and throughput-gpu-SIZE.json to $OUT (the device tool's folder; /tmp/toxitune-gpu-out if unset).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
KIT=gpu-kit
SIZES="${GPU_BENCH_SIZES:-1024 11916}"
RUN_TIMEOUT="${GPU_BENCH_RUN_TIMEOUT:-240}"
OUT="${OUT:-/tmp/toxitune-gpu-out}"
TEACHER=/tmp/toxitune-teacher
mkdir -p "$OUT"
# Nothing can be fetched there: fail fast on any hub look-up instead of waiting for network time-outs.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1

main() {
    for f in data/train.csv data/validation.csv data/test.csv teacher/config.json teacher/tokenizer.json; do
        [[ -f "$KIT/$f" ]] || { echo "error: $KIT/$f missing; run bash benchmarks/gpu_prepare.sh here and carry [\"gpu-kit\"]"; return 1; }
    done

    # Packages the device image lacks travel as wheels; a private target leaves its own site-packages alone.
    if compgen -G "$KIT/whl/*.whl" >/dev/null; then
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$KIT"/whl/*.whl
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    python3 - <<'EOF'
import importlib, sys
names = "torch transformers accelerate peft pandas numpy sklearn tqdm filelock huggingface_hub safetensors tokenizers".split()
missing = []
for name in names:
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
if missing:
    sys.exit(f"error: missing Python packages {missing}; add their wheels to WHEELS in benchmarks/gpu_prepare.sh and rerun it")
import torch, transformers, accelerate, peft
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"accelerate {accelerate.__version__}, peft {peft.__version__}")
EOF

    if command -v nvidia-smi >/dev/null; then nvidia-smi -L; else echo "nvidia-smi: not found"; fi
    python3 -c 'import torch; print("torch device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (no CUDA)")'

    # The real weights (~90 MB) cannot travel; a seeded random-weight model of the same architecture
    # does the same arithmetic, and throughput does not depend on the weight values.
    python3 - "$KIT/teacher" "$TEACHER" <<'EOF'
import shutil, sys
from pathlib import Path
import torch
from transformers import AutoConfig, AutoModel
from transformers.utils import logging
logging.disable_progress_bar()
source, target = Path(sys.argv[1]), Path(sys.argv[2])
shutil.rmtree(target, ignore_errors=True)
torch.manual_seed(0)
model = AutoModel.from_config(AutoConfig.from_pretrained(source))
model.save_pretrained(target, safe_serialization=True)
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
    if (source / name).exists():
        shutil.copy(source / name, target / name)
params = sum(p.numel() for p in model.parameters())
print(f"teacher: MiniLM-L6 architecture ({model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}, "
      f"{params / 1e6:.1f}M parameters) with RANDOM weights in {target}; "
      "throughput does not depend on the weight values, so these figures stand for the real teacher's")
EOF

    local failed=0
    for size in $SIZES; do
        echo
        echo "=== throughput.py --train-size $size ==="
        # shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of flags
        if ! timeout "$RUN_TIMEOUT" python3 benchmarks/throughput.py --data "$KIT/data" --teacher "$TEACHER" \
            --train-size "$size" --json "$OUT/throughput-gpu-$size.json" ${GPU_BENCH_ARGS:-}; then
            echo "warning: the run with --train-size $size failed or passed ${RUN_TIMEOUT} s; going on"
            failed=1
        fi
    done

    echo
    echo "=== summary (examples/s for distillation, steps/s for LoRA; toxitune/baseline) ==="
    python3 - "$OUT" $SIZES <<'EOF'
import json, sys
from pathlib import Path
out, sizes = Path(sys.argv[1]), sys.argv[2:]
for size in sizes:
    path = out / f"throughput-gpu-{size}.json"
    if not path.exists():
        print(f"train-size {size}: no figures ({path.name} missing)")
        continue
    f = json.loads(path.read_text())
    device = f["machine"]["cuda"] or "CPU"
    line = (f"train-size {f['train_size']} on {device}: distillation baseline {f['baseline']:.1f}, "
            f"toxitune {f['toxitune']:.1f} ex/s, ratio {f['ratio']:.2f}x")
    if "lora" in f:
        lora = f["lora"]
        line += f"; LoRA baseline {lora['baseline']:.2f}, toxitune {lora['toxitune']:.2f} steps/s, ratio {lora['ratio']:.2f}x"
    print(line)
EOF
    return "$failed"
}

main 2>&1 | tee "$OUT/gpu.log"
