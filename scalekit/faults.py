"""Named moments at which the fault-injection tests stop a study the way a crash would.

With ``SCALEKIT_FAULT=<point>`` (or ``<point>:<text>``) and ``SCALEKIT_FAULT_MARKER=<file>`` in the environment, the process that
reaches ``fault_point(<point>)`` writes the marker file and blocks there; the test then sends SIGKILL to the
study's process group at exactly that moment and reruns the study. Without those variables (every real run)
a fault point costs one environment lookup. Points are listed in :data:`POINTS` so a typo fails loudly.
:func:`injected` names a fault that changes a value instead of blocking (a NaN training loss), for the tests of
what follows from it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from scalekit.errors import ScalekitError

POINTS = (
    "demo-data",  # the demo dataset is half written
    "prepare",  # nnU-Net preprocessing ran, scalekit's record of it is not written yet
    "stage-request",  # a stage's request.json is written, its first checkpoint is not
    "stage-epoch",  # a stage wrote an epoch checkpoint and has epochs left
    "results-write",  # results.csv is being rewritten after a stage completed
    "confirm",  # a finalist's run with another seed is recorded, and other runs are left
    "report",  # the report is being written
    "export",  # an export's folder is written, not yet in place (nor nnU-Net's shared plans file)
    "predict-case",  # a prediction wrote a case's segmentation and has cases left
    "nan-loss",  # injected: a stage's training loss is NaN (the stage must fail with the reason)
)
ENV_POINT = "SCALEKIT_FAULT"
ENV_MARKER = "SCALEKIT_FAULT_MARKER"
ENV_VARIABLES = (ENV_POINT, ENV_MARKER)
BLOCK_SECONDS = 600


def _named(name: str, where: str) -> bool:
    if name not in POINTS:
        raise ScalekitError(f"unknown fault point {name!r}; known: {', '.join(POINTS)}")
    point, _, text = os.environ.get(ENV_POINT, "").partition(":")
    return point == name and text in where


def injected(name: str, where: str = "") -> bool:
    """Whether the environment injects this fault here (``SCALEKIT_FAULT=<point>[:<text>]``, no marker)."""
    return _named(name, where)


def fault_point(name: str, where: str = "") -> None:
    """Block here (after writing the marker) when the environment names this point; return otherwise.

    ``SCALEKIT_FAULT=<point>:<text>`` narrows a point to the calls whose ``where`` (e.g. a stage id)
    contains ``<text>``.
    """
    if not _named(name, where):
        return
    marker = os.environ.get(ENV_MARKER)
    if not marker or Path(marker).exists():  # only the first process to get here waits to be killed
        return
    Path(marker).write_text(f"{name} {os.getpid()}\n")
    time.sleep(BLOCK_SECONDS)
