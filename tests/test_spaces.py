from __future__ import annotations

import optuna
import pytest

from studies.spaces import LOSS_WEIGHTS, Simplex, default_space, readable_params, suggest
from trainers.config import TrainConfig
from trainers.errors import ConfigError


def _draws(simplex: Simplex, n: int) -> list[dict[str, float]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    study.optimize(lambda trial: drawn.append(simplex.suggest(trial, LOSS_WEIGHTS)) or 0.0, n_trials=n)
    return drawn


def test_loss_weights_sum_to_one_and_respect_the_label_floor():
    drawn = _draws(Simplex(min_cls=0.3), 300)
    for weights in drawn:
        assert sum(weights.values()) == pytest.approx(1.0)
        assert weights["w_cls"] >= 0.3 and min(weights.values()) >= 0
    shares = [w["w_cls"] for w in drawn]
    # Uniform on the floored simplex: w_cls = 0.3 + 0.7 * Beta(1, 2), mean 0.3 + 0.7 / 3.
    assert sum(shares) / len(shares) == pytest.approx(0.3 + 0.7 / 3, abs=0.03)
    assert min(shares) < 0.32, "the floor is reached, not only approached from far above"


def test_distillation_spaces_keep_a_floor_on_the_label_loss():
    assert default_space("odd")[LOSS_WEIGHTS].min_cls > 0


@pytest.mark.parametrize("floor", [-0.1, 1.0])
def test_a_floor_outside_zero_to_one_is_refused(floor):
    with pytest.raises(ConfigError, match="min_cls must be in"):
        Simplex(min_cls=floor)


def test_readable_params_show_the_loss_weights_in_place_of_the_draws():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    config = suggest(trial, TrainConfig(method="odd"), default_space("odd"))
    readable = readable_params(trial.params, trial.user_attrs)
    assert not any(name.endswith("_draw") for name in readable)
    loss = config.loss
    assert (readable["w_cls"], readable["w_div"], readable["w_cos"]) == (loss.w_cls, loss.w_div, loss.w_cos)
    # The weights stand where the draws stood; every other parameter keeps its value and place.
    assert list(readable) == [n.removesuffix("_draw") for n in trial.params]
    assert {n: v for n, v in readable.items() if not n.startswith("w_")} == {
        n: v for n, v in trial.params.items() if not n.endswith("_draw")
    }


def test_readable_params_leave_a_trial_without_draws_alone():
    params = {"lr": 1e-4, "lora.rank": 8}
    assert readable_params(params, {"worker": "w1"}) == params


def test_a_preset_simplex_draws_the_intermediate_weights_too_and_keeps_the_old_repr():
    from studies.spaces import distribution_from_toml

    simplex = distribution_from_toml(
        LOSS_WEIGHTS, {"simplex": ["w_cls", "w_div", "w_cos", "w_hidden", "w_attn"], "min_cls": 0.1}
    )
    for weights in _draws(simplex, 20):
        assert set(weights) == {"w_cls", "w_div", "w_cos", "w_hidden", "w_attn"}
        assert sum(weights.values()) == pytest.approx(1.0) and weights["w_cls"] >= 0.1
    # Stored studies pin their space's repr: the default simplex's must not change.
    assert repr(Simplex(min_cls=0.1)) == "Simplex(min_cls=0.1)"
    with pytest.raises(ConfigError, match="w_cls among them"):
        Simplex(names=("w_div", "w_hidden"))
