"""Test macro-F1 of two models resampled over the test split: ``python paired_bootstrap.py A.npz B.npz``.

Prints one model's standard deviation and 95% interval, and those of the paired difference B − A
(2,000 resamples, both models scored on the same resampled tweets, argmax predictions).
"""

import sys

import numpy as np
from sklearn.metrics import f1_score

a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
assert (a["yt"] == b["yt"]).all(), "the two files hold different test splits"
y, pred_a, pred_b = a["yt"], a["pt"] >= 0.5, b["pt"] >= 0.5
rng = np.random.default_rng(0)
f1_a, gaps = [], []
for _ in range(2000):
    i = rng.integers(0, len(y), len(y))
    f1_a.append(f1_score(y[i], pred_a[i], average="macro"))
    gaps.append(f1_score(y[i], pred_b[i], average="macro") - f1_a[-1])
print("A", f1_score(y, pred_a, average="macro"), "B", f1_score(y, pred_b, average="macro"))
low, high = np.percentile(f1_a, [2.5, 97.5])
print(f"single-model test macro-F1 bootstrap sd {np.std(f1_a):.4f}, 95% [{low:.4f}, {high:.4f}]")
low, high = np.percentile(gaps, [2.5, 97.5])
print(f"paired B-A: mean {np.mean(gaps):.4f} sd {np.std(gaps):.4f} 95% [{low:.4f}, {high:.4f}]")
