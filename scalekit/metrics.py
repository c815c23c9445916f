"""Segmentation metrics: Dice and surface Dice (normalised surface distance, NSD) per class.

numpy and scipy only. Surfaces are voxel surfaces, as in MONAI's ``compute_surface_dice``: the border of a
mask is the set of its voxels that have a 6-connected neighbour outside it (voxels outside the volume count as
outside), and the distance from a border voxel to the other mask's border is the Euclidean distance between
voxel centres in millimetres (``scipy.ndimage.distance_transform_edt`` with the voxel spacing). Surface Dice at
tolerance t (Nikolov et al. 2021) is the share of both borders that lies within t mm of the other border::

    NSD = (|{p in dP : d(p, dG) <= t}| + |{g in dG : d(g, dP) <= t}|) / (|dP| + |dG|)

Conventions for empty masks: a class absent from both prediction and reference gives NaN for Dice and NSD (it
carries no information, and ``nanmean`` skips it); absent from exactly one of them gives 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from scalekit.errors import ScalekitError


def _check_pair(prediction: np.ndarray, reference: np.ndarray) -> None:
    if prediction.shape != reference.shape:
        raise ScalekitError(
            f"prediction shape {prediction.shape} differs from reference shape {reference.shape}; "
            "both must be label maps on the same voxel grid"
        )


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice coefficient ``2|P & G| / (|P| + |G|)`` of two boolean masks of equal shape (NaN if both empty)."""
    _check_pair(prediction, reference)
    p, g = prediction.astype(bool), reference.astype(bool)
    total = int(p.sum()) + int(g.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int((p & g).sum()) / total


def border(mask: np.ndarray) -> np.ndarray:
    """Voxels of a boolean mask with at least one face neighbour outside the mask (or outside the volume)."""
    mask = mask.astype(bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def _distance_to(surface: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance in mm from every voxel centre to the nearest voxel of ``surface`` (non-empty)."""
    return ndimage.distance_transform_edt(~surface, sampling=spacing)


def surface_dice(
    prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 1.0
) -> float:
    """Surface Dice (NSD) of two boolean masks at ``tolerance_mm``, voxel size ``spacing`` (mm per axis).

    Returns a value in [0, 1]; NaN if both masks are empty, 0 if exactly one is.
    """
    _check_pair(prediction, reference)
    if len(spacing) != prediction.ndim:
        raise ScalekitError(f"spacing {tuple(spacing)} has {len(spacing)} entries for a {prediction.ndim}-D mask")
    if tolerance_mm < 0:
        raise ScalekitError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    bp, bg = border(prediction), border(reference)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p + n_g == 0:
        return float("nan")
    if n_p == 0 or n_g == 0:
        return 0.0
    close_p = int((_distance_to(bg, spacing)[bp] <= tolerance_mm).sum())
    close_g = int((_distance_to(bp, spacing)[bg] <= tolerance_mm).sum())
    return (close_p + close_g) / (n_p + n_g)


@dataclass(frozen=True)
class CaseMetrics:
    """Per-class metrics of one case; lists follow ``labels`` (foreground classes only)."""

    labels: tuple[int, ...]
    dice: tuple[float, ...]
    nsd: tuple[float, ...]


def case_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    labels: Sequence[int],
    spacing: Sequence[float],
    tolerance_mm: float = 1.0,
) -> CaseMetrics:
    """Dice and NSD of each label value in ``labels`` between two integer label maps of equal shape."""
    _check_pair(prediction, reference)
    dices, nsds = [], []
    for value in labels:
        p, g = prediction == value, reference == value
        dices.append(dice(p, g))
        nsds.append(surface_dice(p, g, spacing, tolerance_mm))
    return CaseMetrics(tuple(labels), tuple(dices), tuple(nsds))


def mean_over_cases(values: Sequence[Sequence[float]]) -> list[float]:
    """Per-class mean over cases, skipping NaN (class absent in both); NaN where a class is never present."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return []
    present = ~np.isnan(array)
    sums = np.where(present, array, 0.0).sum(0)
    counts = present.sum(0)
    return [float(s / c) if c else float("nan") for s, c in zip(sums, counts)]
