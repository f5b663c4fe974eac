from __future__ import annotations

import dataclasses

import pytest

from trainers.config import TeacherConfig, TrainConfig
from trainers.errors import ConfigError


def test_config_round_trips_through_its_dict():
    config = TrainConfig(method="lora")
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.lr == 5e-4 and TrainConfig(method="odd").lr == 1e-4, "method-dependent default lr"


@pytest.mark.parametrize(
    ("method", "has_loss", "has_lora", "teacher_keys"),
    [
        ("odd", True, False, {f.name for f in dataclasses.fields(TeacherConfig)}),
        ("even", True, False, {f.name for f in dataclasses.fields(TeacherConfig)}),
        ("lora", False, True, {"name"}),
        ("teacher", False, False, {"name", "kind"}),
    ],
)
def test_the_applicable_dict_keeps_what_the_method_uses(method, has_loss, has_lora, teacher_keys):
    config = TrainConfig.from_dict(
        {"method": method, "lr": 3e-4, "data": {"label_names": ["clean", "toxic"]}, "teacher": {"name": "t"}}
    )
    applicable = config.applicable_dict()
    assert ("loss" in applicable, "lora" in applicable) == (has_loss, has_lora)
    assert set(applicable["teacher"]) == teacher_keys
    assert TrainConfig.from_dict(applicable) == config

    # Settings the method never reads may differ; the rebuilt config trains the same.
    unused = TrainConfig.from_dict(
        {**config.to_dict(), "teacher": {"name": "t", "epochs": 9}, "lora": {"rank": 4}}
    )
    assert TrainConfig.from_dict(unused.applicable_dict()).applicable_dict() == unused.applicable_dict()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": "3"}, "TrainConfig.epochs must be an integer, but got '3'"),
        ({"epochs": True}, "must be an integer"),
        ({"teacher": "bert-base-uncased"}, "TrainConfig.teacher must be a table of TeacherConfig settings"),
        ({"data": {"train_size": 1.5}}, "DataConfig.train_size must be an integer"),
        ({"lora": {"target_modules": [1, 2]}}, "must be a list of names"),
        ({"epochs": 0}, "epochs must be positive, but got 0"),
        ({"method": "bogus"}, "method must be one of"),
        ({"loss": {"w_cls": 0, "w_div": 0, "w_cos": 0}}, "at least one loss weight must be positive"),
        ({"warmup_ratio": 1.5}, "warmup_ratio must be in [0, 1)"),
        ({"data": {"label_names": ["toxic", "toxic"]}}, "label names must be distinct, but got toxic,toxic"),
        ({"colour": "blue"}, "unknown TrainConfig settings ['colour']"),
        ({"teacher": {"ensemble": 0}}, "teacher ensemble (--teacher-ensemble) must be at least 1, but got 0"),
        ({"teacher": {"kind": "half"}}, "teacher kind must be one of"),
        ({"loss": {"w_attn": -0.1}}, "loss weight w_attn (--w-attn) must be >= 0"),
    ],
)
def test_bad_settings_are_config_errors(values, message):
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict(values)
    assert message in str(error.value)


def test_toml_and_json_forms_are_accepted():
    config = TrainConfig.from_dict(
        {"lr": 1, "lora": {"target_modules": "query, value"}, "hidden_dropout": None}
    )
    assert (
        config.lr == 1.0
        and config.lora.target_modules == ("query", "value")
        and config.hidden_dropout is None
    )
