"""Generate the quickstart smoke set: short synthetic tweets, labelled 0 (not offensive) or 1 (offensive).

This is a *smoke set*, not a benchmark: templated sentences with a little label noise, small enough to
ship (well under 1 MB) and to tune on a laptop CPU in minutes. It checks that a study runs end to end;
quality claims belong on real data such as TweetEval.

Run ``python -m studies.smoke_data`` to regenerate ``studies/data/quickstart``; the output is deterministic.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

SUBJECTS = [
    "this movie",
    "the new phone",
    "my neighbour",
    "that referee",
    "the senator",
    "your post",
    "the game last night",
    "this song",
    "our coach",
    "the weather",
    "that podcast",
    "the mayor",
]
NEUTRAL = [
    "is pretty good honestly",
    "was better than I expected",
    "made my day",
    "needs a second look",
    "is on at eight tonight",
    "got a fair review",
    "could use some work",
    "is worth a listen",
    "reminds me of summer",
    "did alright I guess",
    "is trending again",
    "starts next week",
]
OFFENSIVE = [
    "is a total idiot",
    "is pathetic trash",
    "can shut the hell up",
    "is a disgusting loser",
    "should get lost forever",
    "is dumb as a rock",
    "is a worthless clown",
    "makes me sick, moron",
]
OPENERS = ["@user", "lol", "honestly", "ok so", "wow", "", "", ""]
CLOSERS = ["#mondays", "!!", "smh", "url", "😂", "", "", ""]
SIZES = {"train": 800, "validation": 200, "test": 200}
NOISE = 0.08  # share of flipped labels, so the task is not trivially separable


def make_rows(size: int, rng: random.Random) -> list[tuple[str, int]]:
    rows = []
    for i in range(size):
        label = int(i % 3 == 0)
        predicate = rng.choice(OFFENSIVE if label else NEUTRAL)
        text = " ".join(
            filter(None, [rng.choice(OPENERS), rng.choice(SUBJECTS), predicate, rng.choice(CLOSERS)])
        )
        if rng.random() < NOISE:
            label = 1 - label
        rows.append((text, label))
    rng.shuffle(rows)
    return rows


def write_smoke_set(folder: Path, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for name, size in SIZES.items():
        with open(folder / f"{name}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(make_rows(size, rng))


if __name__ == "__main__":
    write_smoke_set(Path(__file__).parent / "data" / "quickstart")
