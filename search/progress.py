"""What a study prints while it runs: one live line per trial, then a summary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tqdm.auto import tqdm

# The parameters shown on a trial's line, in order; the full set is in storage and W&B.
KEY_PARAMS = (
    "method",
    "teacher.kind",
    "student.layer_map",
    "student.depth",
    "lr",
    "epochs",
    "lora.rank",
    "w_cls",
    "w_div",
    "w_cos",
    "w_hidden",
    "w_attn",
    "loss.temperature",
    "loss.div_warmup_epochs",
    "batch_size",
)


def format_params(params: Mapping[str, Any]) -> str:
    """A short ``name=value`` list of the parameters worth a glance (an ``any`` study's without their branch)."""
    settings = {name.split("/")[-1]: value for name, value in params.items()}
    parts = []
    for name in KEY_PARAMS:
        if name in settings:
            value = settings[name]
            shown = f"{value:.3g}" if isinstance(value, float) else str(value)
            parts.append(f"{name.split('.')[-1]}={shown}")
    return " ".join(parts)


class TrialLine:
    """A live progress line for one trial: its epochs, latest validation metric and state."""

    def __init__(
        self, number: int, params: Mapping[str, Any], *, epochs: int, metric: str, enabled: bool
    ) -> None:
        self.metric = metric
        self.prefix = f"trial {number:>3}"
        self.params = format_params(params)
        self.bar = tqdm(total=epochs, desc=self.prefix, unit="epoch", leave=False, disable=not enabled)
        self.bar.set_postfix_str(self.params)

    def update(self, epoch: float, value: float) -> None:
        self.bar.n = min(epoch, self.bar.total)
        self.bar.set_postfix_str(f"{self.params} {self.metric}={value:.4f}")

    def finish(self, state: str, value: float | None, epoch: float, detail: str = "") -> None:
        self.bar.close()
        shown = "-" if value is None else f"{value:.4f}"
        line = f"{self.prefix} {state:<9} epoch {epoch:4.2f}  {self.metric} {shown}  {self.params}"
        tqdm.write(f"{line}  ({detail})" if detail else line)
