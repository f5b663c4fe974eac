"""Issue 27's tuned arms: test macro-F1 over seeds, training s/epoch, teacher scores and the winning weights."""

import glob
import json
import os

R = "/work/runs27"
ARMS = [
    ("logits only (tuned)", "odd-logits"),
    ("+ hidden", "hidden/odd/tuned"),
    ("+ hidden, ensemble of 3 seeds", "ens3-hidden/odd/tuned"),
    ("+ searched teacher", "tteacher-logits/odd/tuned"),
    ("+ hidden, searched teacher", "tteacher-hidden/odd/tuned"),
    ("+ hidden, searched ensemble of 3", "tteacher-ens3-hidden/odd/tuned"),
    ("+ hidden + attention", "attn/odd/tuned"),
    ("2 layers + hidden", "two-hidden"),
    ("2 layers + hidden, searched teacher", "two-tt-hidden"),
    ("tuned LoRA", "lora-tuned"),
]
for name, path in ARMS:
    metrics = os.path.join(R, path, "metrics.json")
    if not os.path.exists(metrics):
        print(f"{name}: missing")
        continue
    c = json.load(open(metrics))["candidates"][0]
    runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(R, path, "runs", "*.json")))]
    per_epoch = [r["seconds"] / r["history"][-1]["epoch"] for r in runs]
    t = c["test"]["macro_f1"]
    teacher = c.get("teacher") or {}
    tv = teacher.get("validation", {}).get("macro_f1")
    tt = teacher.get("test", {}).get("macro_f1")
    members = [(m["validation"]["macro_f1"], m["test"]["macro_f1"]) for m in teacher.get("members", [])]
    cfg = c["config"]
    loss = cfg.get("loss", {})
    weights = {k: round(v, 3) for k, v in loss.items() if k.startswith("w_") and v}
    print(
        f"{name}: trial {c['trial']} test {t['mean']:.4f} ± {t['ci95']:.4f} {[round(v, 4) for v in t['values']]} "
        f"val {c['validation']['mean']:.4f}; s/epoch {sum(per_epoch) / len(per_epoch):.1f}; "
        f"teacher {tv and round(tv, 4)} / {tt and round(tt, 4)} members {[(round(a, 4), round(b, 4)) for a, b in members]}; "
        f"lr {cfg['lr']:.2e} bs {cfg['batch_size']} depth {cfg.get('student', {}).get('depth')} map {cfg.get('student', {}).get('layer_map')} {weights} T {loss.get('temperature')}"
    )
