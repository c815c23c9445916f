"""A synthetic multi-organ CT-like dataset in nnU-Net v2 raw format, deterministic from its seed.

Every case is a body (an ellipsoid, not labelled) holding four organs of smooth, noisy shape:

====  ============  ===========================================================================
1     spine         a vertical cylinder at the back of the body, brightest structure
2     liver         a large blob on one side of the spine
3     kidney_same   a kidney on the liver's side
4     kidney_other  a kidney on the other side, same shape distribution and intensity as 3
====  ============  ===========================================================================

Each case is mirrored left/right at random, rotated about the vertical axis, scaled and shifted, so the two
kidneys differ only by where they sit relative to the liver: telling 3 from 4 needs a receptive field that
reaches from a kidney to the liver, which is what larger kernels buy. A smooth multiplicative bias field and
Gaussian noise cover the image. Axes are (z, y, x) as SimpleITK arrays; spacing is 1 mm isotropic.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from scalekit._atomic import write_atomic
from scalekit.errors import ScalekitError
from scalekit.faults import fault_point

log = logging.getLogger(__name__)

LABELS = {"background": 0, "spine": 1, "liver": 2, "kidney_same": 3, "kidney_other": 4}
"""Class names and values of the demo dataset (dataset.json ``labels``)."""

_INTENSITY = {"body": 0.3, "spine": 1.2, "liver": 0.55, "kidney": 0.8}
FILE_ENDING = ".nii.gz"


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``sigma`` voxels."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _blob(
    coords: np.ndarray, centre: np.ndarray, radii: np.ndarray, wobble: np.ndarray, amplitude: float
) -> np.ndarray:
    """Ellipsoid ``|(x - centre) / radii| <= 1`` whose surface is displaced by ``amplitude * wobble``."""
    d = (coords - centre[:, None, None, None]) / radii[:, None, None, None]
    return np.sqrt((d**2).sum(0)) <= 1.0 + amplitude * wobble


def make_case(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic case: ``(image float32 (S, S, S), labels uint8 (S, S, S))`` for ``size`` S >= 16."""
    if size < 16:
        raise ScalekitError(f"demo case size must be at least 16 voxels, got {size}")
    grid = np.stack(np.meshgrid(*(np.arange(size, dtype=np.float32),) * 3, indexing="ij"))
    centre = (size - 1) / 2
    scale = size / 64 * rng.uniform(0.85, 1.15)
    angle = rng.uniform(-math.radians(25), math.radians(25))
    mirror = rng.random() < 0.5
    shift = rng.uniform(-0.06, 0.06, size=3) * size
    # Body frame: z vertical, y front/back, x left/right; positions in "64-voxel" units around the centre.
    cos, sin = math.cos(angle), math.sin(angle)

    def place(z: float, y: float, x: float) -> np.ndarray:
        x = -x if mirror else x
        yr, xr = cos * y - sin * x, sin * y + cos * x
        return np.array([z, yr, xr]) * scale + centre + shift

    wobble = _smooth_field(rng, (size,) * 3, sigma=size / 10)
    labels = np.zeros((size,) * 3, np.uint8)
    image = np.zeros((size,) * 3, np.float32)
    body = _blob(grid, place(0, 0, 0), np.array([30.0, 20.0, 27.0]) * scale, wobble, 0.05)
    image[body] = _INTENSITY["body"]
    kidney_radii = np.array([7.0, 4.5, 4.0]) * rng.uniform(0.85, 1.15, 3)
    organs = [
        ("liver", 2, place(rng.uniform(4, 9), rng.uniform(-3, 1), -13), np.array([11.0, 10.0, 9.0]), 0.12),
        ("kidney", 3, place(rng.uniform(-9, -5), 7, -10), kidney_radii, 0.08),
        ("kidney", 4, place(rng.uniform(-9, -5), 7, 10), kidney_radii * rng.uniform(0.95, 1.05, 3), 0.08),
        ("spine", 1, place(0, 13, 0), np.array([40.0, 3.5, 3.5]), 0.05),
    ]
    for kind, value, where, radii, amplitude in organs:
        radii = radii * scale * rng.uniform(0.9, 1.1, 3) if kind == "liver" else radii * scale
        mask = _blob(grid, where, radii, wobble, amplitude) & body
        labels[mask] = value
        image[mask] = _INTENSITY[kind]
    image = ndimage.gaussian_filter(image, 0.7)
    bias = np.exp(0.25 * _smooth_field(rng, (size,) * 3, sigma=size / 4))
    image = image * bias + rng.normal(0.0, 0.06, image.shape)
    return image.astype(np.float32), labels


def make_demo_dataset(
    out_dir: Path,
    cases: int = 24,
    size: int = 64,
    seed: int = 0,
    dataset_id: int = 990,
    name: str = "ScalekitDemo",
) -> Path:
    """Write the demo dataset as an nnU-Net v2 raw dataset and return its folder.

    Args:
        out_dir: parent folder (e.g. ``$nnUNet_raw``); the dataset goes to ``out_dir/Dataset{id:03d}_{name}``.
        cases: number of training cases (>= 2).
        size: edge length S of the cubic (S, S, S) volumes (>= 16).
        seed: everything is a function of the seed: the same arguments give identical files.
        dataset_id: nnU-Net dataset id, 1..999.
        name: dataset name (letters, digits, underscores).

    Returns:
        The dataset folder with ``imagesTr/{case}_0000.nii.gz``, ``labelsTr/{case}.nii.gz``, ``dataset.json``.
    """
    import SimpleITK as sitk

    if cases < 2:
        raise ScalekitError(f"cases={cases}: nnU-Net needs at least 2 training cases")
    if not 1 <= dataset_id <= 999:
        raise ScalekitError(f"dataset_id={dataset_id} must be between 1 and 999 (nnU-Net uses three digits)")
    if not name or not name.replace("_", "").isalnum():
        raise ScalekitError(f"dataset name {name!r} must be letters, digits and underscores")
    folder = Path(out_dir) / f"Dataset{dataset_id:03d}_{name}"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    case_rngs = rng.spawn(cases)
    for index, case_rng in enumerate(case_rngs):
        image, labels = make_case(size, case_rng)
        case = f"demo_{index:03d}"
        for array, path in (
            (image, folder / "imagesTr" / f"{case}_0000{FILE_ENDING}"),
            (labels, folder / "labelsTr" / f"{case}{FILE_ENDING}"),
        ):
            itk = sitk.GetImageFromArray(array)
            itk.SetSpacing((1.0, 1.0, 1.0))
            sitk.WriteImage(itk, str(path), useCompression=True)
        if index == cases // 2:
            fault_point("demo-data")
    dataset_json = {
        "channel_names": {"0": "synthetic"},
        "labels": LABELS,
        "numTraining": cases,
        "file_ending": FILE_ENDING,
        "name": name,
        "description": f"scalekit synthetic demo: {cases} cases of {size}^3, seed {seed}",
    }
    write_atomic(folder / "dataset.json", json.dumps(dataset_json, indent=2) + "\n")  # last: marks it complete
    log.info("wrote %d demo cases of %d^3 to %s", cases, size, folder)
    return folder
