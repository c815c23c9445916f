"""Sanity limits of a study file, and the duplicates a search space may not hold.

The limits are upper bounds no real study comes near: they catch a typo (an extra zero, a missing decimal
point) before it becomes a run that never ends or a dataset that fills the disk. Each sits far above what the
MedNeXt paper (Roy et al. 2023) uses, noted beside it; :mod:`scalekit.studyfile.models` applies them with
``Field(le=...)`` and reports a value above one as ``field.path: Input should be less than or equal to LIMIT,
got VALUE (...)``.

A space must not list one network twice: two presets, two explicit families or a family and a preset that
build the same network (width C, nine block counts B, nine expansion ratios R), or two families under one
label. Points of a compound-scaling range may coincide with each other or with listed families by design
(rounding); :class:`scalekit.space.SearchSpace` keeps each network once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pydantic_core import PydanticCustomError

from scalekit.networks.mednext import PRESETS, per_stage

# training (the paper: 1000 epochs of 250 iterations, AdamW at 1e-3, NSD at 1 mm)
MAX_EPOCHS = 10_000
"""``training.epochs`` and ``search.min_epochs``: epochs of one chain stage (the paper trains 1000)."""
MAX_ITERATIONS = 10_000
"""``training.iterations_per_epoch`` and ``training.val_iterations`` (the paper: 250 and 50)."""
MAX_LR = 1.0
"""``training.initial_lr`` (the paper: 1e-3)."""
MAX_TOLERANCE_MM = 100.0
"""``training.nsd_tolerance_mm`` (the paper: 1 mm)."""

# dataset (the paper: 128^3 patches, batch 2, 1 mm spacing)
MAX_PATCH = 1024
"""Each entry of ``dataset.patch_size``, voxels along one axis."""
MAX_BATCH = 1024
"""``dataset.batch_size``."""
MAX_SPACING_MM = 100.0
"""Each entry of ``dataset.spacing``, mm."""
MAX_DEMO_CASES = 1000
"""``dataset.demo.cases``: synthetic cases generated."""
MAX_DEMO_SIZE = 256
"""``dataset.demo.size``: voxels along each axis of a synthetic case."""
MAX_DEMO_VOXELS = 2**30
"""``dataset.demo``: cases x size**3 voxels in all (2**30 is 4 GiB of float32 images)."""

# space (MedNeXt-L: C 32, block counts and expansion ratios up to 8, kernel 5)
MAX_CHANNELS = 512
"""``space.families[].n_channels``, ``space.preset_channels`` and each entry of ``space.scaling.n_channels``."""
MAX_PER_STAGE = 64
"""Each entry of ``block_counts`` and ``exp_r`` of an explicit family."""
MAX_MULTIPLIER = 16.0
"""Each entry of ``space.scaling.depth`` and ``space.scaling.expansion``."""
MAX_KERNEL = 31
"""Each entry of ``space.kernels`` (the paper: 3 and 5)."""

# search, constraints, resources
MAX_FAMILIES = 1000
"""``search.families``: families a study trains."""
MAX_ETA = 100
"""``search.eta``: halving keeps the top 1/eta of a rung (the usual: 3)."""
MAX_BUDGET_EPOCHS = 10_000_000
"""``search.budget_epochs``: training epochs of the whole study."""
MAX_GPU_HOURS = 1_000_000.0
"""``search.budget_gpu_hours``."""
MAX_MEMORY_GB = 10_000.0
"""``constraints.max_memory_gb`` (an H200 has 141 GB)."""
MAX_GFLOPS = 1e9
"""``constraints.max_gflops``: GFLOPs of one training step."""
MAX_CPUS = 4096
"""``resources.cpus_per_trial``."""
MAX_GPUS = 64
"""``resources.gpus_per_trial``."""
MAX_CONCURRENT = 10_000
"""``resources.max_concurrent``: trials running at once."""
MAX_SEEDS = 20
"""``finish.confirm.seeds``: other seeds each finalist is retrained with."""
MAX_FINALISTS = 50
"""``finish.confirm.max_finalists``."""


def check_per_stage(name: str, value: int | tuple[int, ...]) -> None:
    """``value`` (one int for all nine stages, or nine ints) is valid and no entry is above :data:`MAX_PER_STAGE`;
    the error is pydantic's ``less_than_equal`` so it reads, and shows the value, as any other bound."""
    entries = per_stage(name, value)
    if max(entries) > MAX_PER_STAGE:
        message = "Input should be less than or equal to {le}"
        if not isinstance(value, int):
            message = "Every entry should be less than or equal to {le}"
        raise PydanticCustomError("less_than_equal", message, {"le": MAX_PER_STAGE})


def demo_voxels_problem(cases: int, size: int) -> str | None:
    """Why a demo dataset of ``cases`` cubes of ``size`` voxels is too large; None when it is not."""
    total = cases * size**3
    if total <= MAX_DEMO_VOXELS:
        return None
    most = max(1, MAX_DEMO_VOXELS // size**3)
    return (f"cases x size**3 = {cases} x {size}**3 = {total:,} voxels, more than the limit of {MAX_DEMO_VOXELS:,} "
            f"(2**30; a sanity limit no demo needs): lower cases (at most {most} at size {size}) or size")


class _Family(Protocol):
    """A family as :func:`duplicate_families` reads it (read-only: the study file's models are frozen)."""

    @property
    def n_channels(self) -> int: ...

    @property
    def block_counts(self) -> int | tuple[int, ...]: ...

    @property
    def exp_r(self) -> int | tuple[int, ...]: ...

    @property
    def label(self) -> str: ...


Network = tuple[int, tuple[int, ...], tuple[int, ...]]


def _describe(network: Network) -> str:
    def compact(values: tuple[int, ...]) -> str:
        return f"{values[0]}x9" if len(set(values)) == 1 else "-".join(map(str, values))

    c, b, r = network
    return f"C{c}, B {compact(b)}, R {compact(r)}"


def duplicate_presets(presets: Sequence[str]) -> str | None:
    """Why ``presets`` (upper case) list one preset twice; None when they do not."""
    twice = list(dict.fromkeys(p for i, p in enumerate(presets) if p in presets[:i]))
    if not twice:
        return None
    return f"{', '.join(twice)} listed more than once; list each preset once"


def duplicate_families(families: Sequence[_Family], presets: Sequence[str] | None,
                       preset_channels: int | None) -> str | None:
    """Why explicit ``families`` repeat a network or a label, of each other or of a listed preset; None when
    they do not. ``presets`` is None when it is unknown (invalid itself): then only families are compared.

    A preset's network has width ``preset_channels`` when that is set, else the preset's own; a label may not
    be a listed preset's name (case-insensitive), nor the name such a preset shows with ``preset_channels``."""
    problems: list[str] = []
    networks: dict[Network, int | str] = {}  # the first owner of each network: an entry index or a preset
    names: dict[str, int | str] = {}
    for p in presets or ():
        own = PRESETS[p]
        width = preset_channels or own.n_channels
        networks.setdefault((width, own.block_counts, own.exp_r), f"preset {p}")
        names.setdefault(p.casefold(), f"preset {p}")
        if width != own.n_channels:
            names.setdefault(f"{p}-C{width}".casefold(), f"preset {p} (shown as {p}-C{width})")
    for i, fam in enumerate(families):
        network = (fam.n_channels, per_stage("block_counts", fam.block_counts), per_stage("exp_r", fam.exp_r))
        first = networks.setdefault(network, i)
        if isinstance(first, int) and first != i:
            problems.append(f"entries {first} and {i} are the same network ({_describe(network)}); remove one")
        elif isinstance(first, str):
            problems.append(f"entry {i} is the same network as {first} ({_describe(network)}); "
                            "remove the entry or the preset")
        label = fam.label.strip().casefold()
        if not label:
            continue
        named = names.setdefault(label, i)
        if isinstance(named, int) and named != i:
            problems.append(f"entries {named} and {i} share the label {fam.label!r}; give each family its own label")
        elif isinstance(named, str):
            problems.append(f"entry {i}'s label {fam.label!r} is the name of {named}; choose another label")
    return "; ".join(problems) or None
