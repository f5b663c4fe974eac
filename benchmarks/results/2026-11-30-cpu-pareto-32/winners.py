"""Rebuild the experiment's three tuned winners (odd trial 0, even trial 3, lora trial 7 of the
2026-11-30 TweetEval experiment) by replaying the seeded sampler's startup draws, without training."""

import sys

import optuna
import yaml

from search.study import make_sampler
from studies.presets import load_preset, search_space
from studies.spaces import suggest
from trainers.cli import merge
from trainers.config import TrainConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)
preset = load_preset("tweeteval")
out = []
for method, number in (("odd", 0), ("even", 3), ("lora", 7)):
    base = TrainConfig.from_dict(
        merge(
            merge(TrainConfig(method=method).to_dict(), preset.config),
            {"method": method, "data": {"train_size": 1500}},
        )
    )
    space = search_space(method, preset)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", 0))
    for _ in range(number + 1):
        trial = study.ask()
        config = suggest(trial, base, space)
        study.tell(trial, 0.5)
    print(method, number, trial.params, file=sys.stderr)
    out.append((method, number, trial.params, config.to_dict()))
for method, number, params, config in out:
    doc = {
        "toxitune_export": 1,
        "study": f"{method}-tweeteval",
        "storage": None,
        "method": method,
        "metric": "macro_f1",
        "direction": "maximize",
        "data": None,
        "study_config": None,
        "candidates": [
            {
                "rank": 1,
                "trial": number,
                "validation_score": None,
                "best_epoch": None,
                "wandb_run": None,
                "teacher": config["teacher"]["name"],
                "params": params,
                "config": config,
            }
        ],
    }
    yaml.safe_dump(doc, open(f"/work/bench-runs/winners/{method}.yaml", "w"), sort_keys=False)
