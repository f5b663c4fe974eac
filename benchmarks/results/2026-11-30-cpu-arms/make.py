"""Issue 27 arms at 1,500 tweets: the experiment's tuned odd winner (logits only) with one change each."""

import copy
import sys

import yaml

from trainers.config import TrainConfig

ARMS = "/work/bench-runs/arms"
odd = yaml.safe_load(open("/work/bench-runs/winners/odd.yaml"))


def arm(name, edit):
    doc = copy.deepcopy(odd)
    doc["study"] = f"odd-{name}"
    config = doc["candidates"][0]["config"]
    edit(config)
    TrainConfig.from_dict(config)  # validated
    yaml.safe_dump(doc, open(f"{ARMS}/{name}.yaml", "w"), sort_keys=False)


def add_weight(name, weight):
    def edit(config):
        loss = config["loss"]
        for key in ("w_cls", "w_div", "w_cos"):
            loss[key] *= 1 - weight
        loss[name] = weight

    return edit


if sys.argv[1] == "fixed":
    arm("hidden", add_weight("w_hidden", 0.25))
    arm("attn", add_weight("w_attn", 0.25))
    arm("ens3", lambda c: c["teacher"].update(ensemble=3))
elif sys.argv[1] == "all":  # hidden, attention and the 3-seed ensemble together

    def everything(config):
        add_weight("w_hidden", 0.2)(config)
        loss = config["loss"]
        for key in ("w_cls", "w_div", "w_cos", "w_hidden"):
            loss[key] *= 0.8
        loss["w_attn"] = 0.2
        config["teacher"]["ensemble"] = 3

    arm("all", everything)
else:  # the searched teacher, once its study has run
    from search.teachers import with_teachers_from

    def edit(config):
        config.update(
            with_teachers_from(
                TrainConfig.from_dict(config), "teacher-tweeteval", f"sqlite:///{ARMS}/teacher.db"
            ).to_dict()
        )

    arm("tteacher", edit)
