"""Generate the quickstart smoke set: short synthetic tweets, labelled 0 (not offensive) or 1 (offensive).

This is a *smoke set*, not a benchmark: templated sentences with a little label noise, small enough to
ship (well under 1 MB) and to tune on a laptop CPU in minutes. It checks that a study runs end to end;
quality claims belong on real data such as TweetEval. It is hard enough for settings to matter: insults
that use no insult word, insult words that insult nobody (denied, or aimed at oneself, or slang praise),
validation and test tweets that use words training never showed, and few training tweets, so a trial
that learns slowly stays at the majority class.

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
PEOPLE = ["my neighbour", "that referee", "the senator", "our coach", "the mayor", "your boyfriend", "@user"]
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
# Each pool is (seen in training, held out): validation and test draw half their words from the held-out
# part, so a trial scores well only as far as it generalises, which its settings decide.
INSULTS = (["idiot", "loser", "clown", "moron"], ["imbecile", "buffoon", "nitwit", "halfwit"])
# Offensive without an insult word: the meaning, not a keyword, makes these offensive.
BARBS = (
    [
        "has the brain of a goldfish",
        "should never be allowed near a microphone",
        "is the reason nobody visits this town",
        "cannot string two words together",
    ],
    ["could not find water in a lake", "has the charm of a wet sock", "makes a brick look clever"],
)
# Not offensive, yet they share words with offensive tweets: slang praise, and insults denied or aimed at oneself.
PRAISE = (
    ["is sick, what a banger", "killed it tonight", "was a beast out there"],
    ["slaps so hard", "is wicked good tonight", "went absolutely beast mode"],
)
DENIALS = (["is not {} at all"], ["is anything but {}", "is hardly {}, to be fair"])
SELF = (["I am such {}, forgot my keys again"], ["what {} I am, missed the bus again"])
OPENERS = ["@user", "lol", "honestly", "ok so", "wow", "", "", ""]
CLOSERS = ["#mondays", "!!", "smh", "url", "😂", "", "", ""]
SIZES = {"train": 300, "validation": 200, "test": 200}
NOISE = 0.03  # share of flipped labels, so the task is not trivially separable


def pick(rng: random.Random, pool: tuple[list[str], list[str]], held_out: bool) -> str:
    """A word of ``pool``: a seen one in training, else a held-out one half the time."""
    seen, unseen = pool
    return rng.choice(unseen if held_out and rng.random() < 0.5 else seen)


def offensive(rng: random.Random, held_out: bool) -> str:
    """An insult aimed at someone: a name-calling word, or a barb that uses none."""
    if rng.random() < 0.5:
        return (
            f"{rng.choice(PEOPLE)} is a total {pick(rng, INSULTS, held_out)}"  # "a total" fits every insult
        )
    return f"{rng.choice(PEOPLE)} {pick(rng, BARBS, held_out)}"


def harmless(rng: random.Random, held_out: bool) -> str:
    """A plain remark, slang praise, or an insult word that insults nobody."""
    kind = rng.random()
    if kind < 0.4:
        return f"{rng.choice(SUBJECTS)} {rng.choice(NEUTRAL)}"
    if kind < 0.6:
        return f"{rng.choice(SUBJECTS)} {pick(rng, PRAISE, held_out)}"
    insult = _article(pick(rng, INSULTS, held_out))
    if kind < 0.8:
        return f"{rng.choice(PEOPLE)} {pick(rng, DENIALS, held_out).format(insult)}"
    return pick(rng, SELF, held_out).format(insult)


def _article(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def make_rows(size: int, rng: random.Random, *, held_out: bool) -> list[tuple[str, int]]:
    rows = []
    for i in range(size):
        label = int(i % 3 == 0)
        body = offensive(rng, held_out) if label else harmless(rng, held_out)
        text = " ".join(filter(None, [rng.choice(OPENERS), body, rng.choice(CLOSERS)]))
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
            writer.writerows(make_rows(size, rng, held_out=name != "train"))


if __name__ == "__main__":
    write_smoke_set(Path(__file__).parent / "data" / "quickstart")
