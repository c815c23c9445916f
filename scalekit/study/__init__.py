"""Studies: a search space, a training budget and a GPU budget turned into trained, measured UpKern chains.

    from scalekit.study import run_study, read_results
    summary = run_study("studies/demo.yaml")
    rows = read_results(summary.study_dir)
"""

from scalekit.records import ResultsTable, StageRecord, read_results, write_results
from scalekit.studyfile import StudyConfig, StudyConfigError, load_study_config, study_problems

from .engine.chain import ChainPlanner, ChainRules
from .engine.families import Constraints
from .engine.planning import build_space
from .runner import StudySummary, run_study

__all__ = [
    "ChainPlanner",
    "ChainRules",
    "Constraints",
    "ResultsTable",
    "StageRecord",
    "StudyConfig",
    "StudyConfigError",
    "StudySummary",
    "build_space",
    "load_study_config",
    "read_results",
    "run_study",
    "study_problems",
    "write_results",
]
