"""Study files: the typed models of a study (``models``) and reading a file into them (``reading``).

The study file is the contract between the study engine that runs a study and the results (Pareto fronts,
report, export) that read one: a saved ``study.yaml`` is read through :class:`StudyConfig`, nowhere else.

    from scalekit.studyfile import load_study_config
    config = load_study_config("studies/demo.yaml")
"""

from .models import StudyConfig, StudyConfigError
from .reading import (
    format_problems,
    load_study_config,
    read_saved_study,
    read_yaml,
    study_problems,
)

__all__ = [
    "StudyConfig",
    "StudyConfigError",
    "format_problems",
    "load_study_config",
    "read_saved_study",
    "read_yaml",
    "study_problems",
]
