"""Cross-validation splits: nnU-Net's ``splits_final.json`` (a list of folds, each ``{"train": [...], "val": [...]}``
of case ids) read and checked, and a user's splits file put in place in a preprocessed dataset.

nnU-Net trains fold ``f`` on ``splits[f]["train"]`` and validates on ``splits[f]["val"]``. Without a splits file,
preparation writes a random 5-fold split of the cases, which spreads repeated scans of one subject over
training and validation; a dataset with such scans needs its own split (grouped by subject).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from pathlib import Path

from scalekit._atomic import write_atomic
from scalekit.errors import ScalekitError

log = logging.getLogger(__name__)

SPLITS_FILE = "splits_final.json"


class SplitsError(ScalekitError):
    """A splits file is unreadable or not a list of ``{train, val}`` folds of known case ids."""


def read_splits(path: Path, cases: Collection[str] | None = None) -> list[dict[str, list[str]]]:
    """The folds of a splits file, checked: a JSON list of ``{"train": [ids], "val": [ids]}``, every id one of
    ``cases`` (when given), no case both trained and validated on in one fold.

    Raises:
        SplitsError: one line naming the file, the fold and the fix.
    """
    fix = 'write a JSON list of {"train": [case ids], "val": [case ids]}, one per fold'
    try:
        folds = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SplitsError(f"{path} does not exist") from None
    except (OSError, ValueError) as err:
        raise SplitsError(f"{path} cannot be read as JSON ({str(err).splitlines()[0]}); {fix}") from None
    if not isinstance(folds, list) or not folds:
        raise SplitsError(f"{path} holds no list of folds; {fix}")
    known = set(cases) if cases is not None else None
    for index, fold in enumerate(folds):
        if not isinstance(fold, dict) or set(fold) != {"train", "val"} or not all(
            isinstance(fold[k], list) and fold[k] and all(isinstance(c, str) for c in fold[k]) for k in fold
        ):
            raise SplitsError(f"{path}: fold {index} is not {{train: [...], val: [...]}} with case ids; {fix}")
        both = set(fold["train"]) & set(fold["val"])
        if both:
            raise SplitsError(f"{path}: fold {index} trains and validates on {sorted(both)[:3]}; keep each case "
                              "on one side")
        unknown = sorted((set(fold["train"]) | set(fold["val"])) - known) if known is not None else []
        if unknown:
            raise SplitsError(f"{path}: fold {index} names case(s) {unknown[:3]} that the dataset does not have "
                              "(ids are the label file names without their ending)")
    return folds


def install_splits(source: Path, preprocessed_dir: Path, cases: Collection[str]) -> bool:
    """Copy the splits file ``source`` (checked against ``cases``) to ``preprocessed_dir/splits_final.json``;
    True when that changed the file (the split it replaced is logged)."""
    folds = read_splits(source, cases)
    target = Path(preprocessed_dir) / SPLITS_FILE
    text = json.dumps(folds, indent=1) + "\n"
    if target.is_file() and target.read_text() == text:
        return False
    if target.is_file():
        log.warning("replacing %s by the study's splits %s", target, source)
    write_atomic(target, text)
    return True


def random_splits(cases: Collection[str]) -> list[dict[str, list[str]]]:
    """The split preparation writes when a dataset has none: nnU-Net's random min(5, cases)-fold split (its
    seed 12345), which ignores subjects."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    ids = sorted(cases)
    return generate_crossval_split(ids, seed=12345, n_splits=min(5, len(ids)))
