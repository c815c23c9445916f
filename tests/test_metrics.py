"""Dice and surface Dice against shapes with analytically known overlap and surface distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scalekit.metrics import border, case_metrics, dice, mean_over_cases, surface_dice


def box(shape: tuple[int, ...], start: tuple[int, ...], size: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def ball(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grid = np.indices(shape, dtype=float)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
    return d2 <= radius**2


def test_shifted_boxes_dice_and_surface_dice_match_closed_forms() -> None:
    side, shift = 12, 2
    a = box((40, 30, 30), (10, 8, 8), side)
    b = box((40, 30, 30), (10 + shift, 8, 8), side)
    assert dice(a, b) == pytest.approx((side - shift) / side)
    spacing = (0.5, 2.0, 2.0)  # the shift is 2 voxels * 0.5 mm = 1 mm
    shell = side**3 - (side - 2) ** 3
    ring = side**2 - (side - 2) ** 2
    # The farthest border voxel of either box is exactly the shift away from the other border.
    assert surface_dice(a, b, spacing, tolerance_mm=1.0) == 1.0
    # Below the smallest voxel spacing only coinciding border voxels count: the rings of the overlap slices.
    expected = (side - shift) * ring / shell
    assert surface_dice(a, b, spacing, tolerance_mm=0.4) == pytest.approx(expected)
    # The tolerance is in mm: with 2 mm voxels along the shift, 1 mm is not enough any more.
    assert surface_dice(a, b, (2.0, 2.0, 2.0), tolerance_mm=1.0) == pytest.approx(expected)


def test_overlapping_balls_dice_matches_lens_volume() -> None:
    r, d = 10.0, 6.0
    a = ball((48, 48, 48), (24, 24, 24 - d / 2), r)
    b = ball((48, 48, 48), (24, 24, 24 + d / 2), r)
    lens = math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12
    sphere = 4 / 3 * math.pi * r**3
    assert dice(a, b) == pytest.approx(lens / sphere, rel=0.02)


def test_concentric_balls_surface_dice_depends_on_tolerance_against_radius_gap() -> None:
    inner = ball((40, 40, 40), (20, 20, 20), 8)
    outer = ball((40, 40, 40), (20, 20, 20), 11)
    assert dice(inner, outer) == pytest.approx(2 * 8**3 / (8**3 + 11**3), rel=0.03)
    assert surface_dice(inner, outer, (1, 1, 1), tolerance_mm=1.0) == 0.0
    assert surface_dice(inner, outer, (1, 1, 1), tolerance_mm=4.5) == 1.0
    # Halving the voxel size halves every distance in mm.
    assert surface_dice(inner, outer, (0.5, 0.5, 0.5), tolerance_mm=2.25) == 1.0


def test_border_is_the_outer_voxel_shell() -> None:
    mask = box((8, 8, 8), (1, 1, 1), 4)
    assert border(mask).sum() == 4**3 - 2**3
    assert border(np.ones((3, 3, 3), bool)).sum() == 26  # the volume edge counts as outside


def test_empty_masks_follow_the_documented_conventions() -> None:
    empty = np.zeros((8, 8, 8), bool)
    full = box((8, 8, 8), (2, 2, 2), 3)
    assert math.isnan(dice(empty, empty)) and math.isnan(surface_dice(empty, empty, (1, 1, 1)))
    assert dice(full, empty) == 0.0 and surface_dice(empty, full, (1, 1, 1)) == 0.0
    assert dice(full, full) == 1.0 and surface_dice(full, full, (1, 1, 1), 0.0) == 1.0


def test_case_metrics_per_label_and_nan_aware_mean() -> None:
    reference = np.zeros((20, 20, 20), np.uint8)
    reference[box((20, 20, 20), (2, 2, 2), 6)] = 1
    reference[box((20, 20, 20), (10, 10, 10), 6)] = 2
    prediction = reference.copy()
    prediction[prediction == 2] = 0
    result = case_metrics(prediction, reference, labels=(1, 2, 3), spacing=(1, 1, 1))
    assert result.dice[:2] == (1.0, 0.0) and math.isnan(result.dice[2])
    assert result.nsd[:2] == (1.0, 0.0) and math.isnan(result.nsd[2])
    assert mean_over_cases([[1.0, float("nan")], [0.5, float("nan")], [0.0, 0.25]]) == [0.5, 0.25]


def test_mismatched_shapes_and_spacing_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="spacing"):
        surface_dice(np.ones((4, 4, 4), bool), np.ones((4, 4, 4), bool), (1, 1))
