"""A distillation study's teachers, taken from the best trials of a teacher (or LoRA) study."""

from __future__ import annotations

import dataclasses

from search.export import load_study, ranked_trials
from trainers.config import TrainConfig
from trainers.errors import ConfigError, ToxituneError

# The studies whose trials train a whole classifier that a student can be copied from.
TEACHER_METHODS = ("teacher", "lora")


def with_teachers_from(base: TrainConfig, study_name: str, storage: str) -> TrainConfig:
    """``base`` distilling from the ``base.teacher.ensemble`` best finished trials of study ``study_name``.

    The best trial becomes ``base.teacher`` (the student's source), the next ones ``base.ensemble``;
    each keeps the settings its trial trained with (:func:`trainers.prepare.teacher_of`), so the task
    fine-tunes and caches exactly those teachers. Reading the study creates nothing.

    Raises:
        ToxituneError: No such study, not a teacher or LoRA study, or fewer finished trials than teachers.
    """
    flag = f"--teacher-from {study_name}"
    if not base.distills:
        raise ConfigError(f"{flag} sets the teacher of a distillation study, not of a {base.method} study")
    try:
        study = load_study(study_name, storage)
    except ToxituneError as error:
        raise ToxituneError(f"{flag}: {error}") from error
    method = study.user_attrs.get("method")
    if method not in TEACHER_METHODS or len(study.directions) > 1:
        raise ToxituneError(
            f"{flag}: a {method or 'non-toxitune'} study, not a single-objective teacher or LoRA study "
            "(python -m search.run --method teacher)"
        )
    wanted = base.teacher.ensemble
    trials = ranked_trials(study)[:wanted]
    if len(trials) < wanted:
        raise ToxituneError(
            f"{flag}: the study holds {len(trials)} finished teacher trial(s), and {wanted} teacher(s) are "
            "asked for (--teacher-ensemble); run more trials first"
        )
    # Imported once the study is known good: torch takes seconds to load, a typo should not wait.
    from trainers.prepare import teacher_of

    teachers = [teacher_of(TrainConfig.from_dict(trial.user_attrs["config"])) for trial in trials]
    first = dataclasses.replace(teachers[0], ensemble=wanted)
    return dataclasses.replace(base, teacher=first, ensemble=tuple(teachers[1:]) if wanted > 1 else ())
