"""What a study's results say, computed (no drawing): Pareto fronts and hypervolume, stages compared within
the noise, compound scaling, selection rules and export, the answer, the tables, seeds, and the summary.

The DataFrame readers (``scalekit.results.read``, ``read_cases``, ``read_classes``; pandas) are imported on
first use, so the rest of the package loads without pandas.
"""

from __future__ import annotations

from typing import Any

_FRAMES = ("read", "read_cases", "read_classes")


def __getattr__(name: str) -> Any:
    if name in _FRAMES:
        from . import frames

        return getattr(frames, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
