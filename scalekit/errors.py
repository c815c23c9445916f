"""The root of every error scalekit raises about its input: ``except ScalekitError`` catches them all.

A :class:`ScalekitError` is a problem with what the user gave (a study file, a dataset, a checkpoint, an
argument) or with the state of a study; its message says what and how to fix it, in one line where it can.
It is a ``ValueError``, so code that caught ``ValueError`` before keeps working. Anything else escaping
scalekit is a bug, and the command line shows its traceback.
"""

from __future__ import annotations


class ScalekitError(ValueError):
    """A problem with scalekit's input or a study's state, explained in the message."""
