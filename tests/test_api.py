"""The Python API and the one home of study settings: StudyConfig makes search.run's flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

import search.run
from search.config import StudyConfig
from trainers.cli import config_overrides
from trainers.errors import ConfigError
from trainers.settings import described

ROOT = Path(__file__).resolve().parents[1]


def test_a_setting_added_to_study_config_is_a_flag_of_search_run(monkeypatch):
    @dataclass(frozen=True, kw_only=True)
    class WithKnob(StudyConfig):
        knob: int = field(default=3, metadata=described("a study setting added in one place"))

    monkeypatch.setattr(search.run, "StudyConfig", WithKnob)
    parser = search.run.build_parser()
    assert "--knob" in parser.format_help() and "a study setting added in one place (default: 3)" in " ".join(
        parser.format_help().split()
    )
    args = parser.parse_args(["--method", "lora", "--trials", "2", "--knob", "7"])
    assert WithKnob.from_dict(config_overrides(args, WithKnob, namespace=search.run.STUDY)).knob == 7


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, r"trials \(--trials\) is required"),
        ({"trials": 0}, r"trials \(--trials\) must be at least 1, but got 0"),
        (
            {"trials": 2, "pruner_warmup_epochs": -1},
            r"pruner_warmup_epochs \(--pruner-warmup-epochs\) must be >= 0",
        ),
        ({"trials": 2, "wandb": {"mode": "loud"}}, r"wandb mode must be one of"),
        ({"trials": 2, "pruner": "sometimes"}, r"pruner \(--pruner\) must be one of"),
        ({"trials": 2, "unknown": 1}, r"unknown StudyConfig settings \['unknown'\]"),
    ],
)
def test_study_settings_are_checked_with_messages_that_read_from_python_and_the_command_line(values, message):
    with pytest.raises(ConfigError, match=message):
        StudyConfig.from_dict(values)


def test_a_signal_that_improves_the_other_way_is_refused():
    with pytest.raises(ConfigError, match=r"pruner_signal \(--pruner-signal\) loss improves the other way"):
        StudyConfig(trials=2, pruner_signal="loss").signal_for("macro_f1")
    assert StudyConfig(trials=2).signal_for("macro_f1") == "roc_auc"


def test_the_benchmarks_call_the_api_and_build_no_command_lines():
    for script in (ROOT / "benchmarks").glob("*.py"):
        text = script.read_text()
        assert "run.main(" not in text and "from search import run" not in text, script.name


def test_the_readme_notebook_snippet_runs_a_quickstart_study(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("TOXITUNE_CACHE_DIR", str(tmp_path / "cache"))
    names: dict = {}
    exec(compile(snippet, "README.md", "exec"), names)  # noqa: S102 - the README's own code, as a reader runs it
    assert len(names["study"].trials) == 3 and names["study"].best_trial is not None
    assert names["export"]["candidates"][0]["trial"] == names["study"].best_trial.number
    assert (tmp_path / "best.yaml").is_file() and (tmp_path / "notebook.db").is_file()
