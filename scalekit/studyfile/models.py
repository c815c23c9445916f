"""Study files: YAML validated into typed pydantic models, with every problem reported at once.

A study file names the dataset, the training budget of each chain stage, the search space, the objectives and
constraints, the search algorithm, where Ray runs and where everything is written. This module holds the
models; :mod:`scalekit.studyfile.reading` reads a file into them (``load_study_config``) and raises
:class:`StudyConfigError` listing every problem with its field path and a hint.

Types are strict where YAML types map cleanly: a whole number is never read from ``true`` or ``"2"``, a number
never from a boolean or a string (a whole number is a fine float), and ``.inf`` / ``.nan`` are refused
everywhere. Every number has an upper bound no real study reaches (:mod:`scalekit.studyfile.limits`), and a
space may not list one network or label twice. What only the file system, the dataset or the storage can show is checked by
:func:`scalekit.study.setup.checks.preflight`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationInfo, field_validator, model_validator

from scalekit import paths
from scalekit.errors import ScalekitError
from scalekit.networks import recipe
from scalekit.networks.mednext import DIVISOR, PRESETS
from scalekit.networks.resenc import INITIAL_LR as RESENC_LR
from scalekit.networks.resenc import PRESETS as RESENC_PRESETS
from scalekit.networks.resenc import ResEncConfig
from scalekit.paths import NnunetRoot, study_root
from scalekit.records import OBJECTIVES, STAGE_ID, Objective
from scalekit.studyfile.rules import BUDGET_RULE, parse_rule

from . import limits as lim

Int = Annotated[int, Strict()]
"""A whole number: not a boolean, not a string."""
Float = Annotated[float, Strict()]
"""A number (whole numbers too): not a boolean, not a string; finite by the models' configuration."""
Bool = Annotated[bool, Strict()]


RESENC_ARCH = ResEncConfig.arch


class StudyConfigError(ScalekitError):
    """A study file is missing, unreadable or invalid; the message lists every problem."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DemoData(_Model):
    """Generate the synthetic demo dataset (``scalekit data demo``) if the raw dataset does not exist yet."""

    cases: Int = Field(24, ge=4, le=lim.MAX_DEMO_CASES)
    size: Int = Field(64, ge=32, le=lim.MAX_DEMO_SIZE)
    seed: Int = 0

    @model_validator(mode="after")
    def _voxels(self) -> DemoData:
        problem = lim.demo_voxels_problem(self.cases, self.size)
        if problem:
            raise ScalekitError(problem)
        return self


UNNAMED = "give the dataset's nnU-Net name or id (dataset.name or dataset.id)"


class DatasetSection(_Model):
    """The nnU-Net v2 dataset and how patches are drawn from it."""

    name: str | None = Field(None, description="nnU-Net dataset name, e.g. Dataset218_AMOS2022_postChallenge_task1")
    id: Int | None = Field(None, ge=1, le=999, description="nnU-Net dataset id, e.g. 218")
    configuration: Literal["3d_fullres", "2d"] = "3d_fullres"
    fold: Annotated[int, Strict(), Field(ge=0)] = Field(
        0, description="the cross-validation fold whose validation cases score every stage")
    patch_size: tuple[Annotated[Int, Field(le=lim.MAX_PATCH)], ...] = (128, 128, 128)
    batch_size: Int = Field(2, ge=1, le=lim.MAX_BATCH)
    spacing: tuple[Annotated[Float, Field(le=lim.MAX_SPACING_MM)], ...] | None = None
    raw_dir: Path | None = Field(None, description="nnUNet_raw; default: $nnUNet_raw, else <output>/nnunet/raw")
    preprocessed_dir: Path | None = Field(
        None, description="nnUNet_preprocessed; default: $nnUNet_preprocessed, else <output>/nnunet/preprocessed"
    )
    splits: Path | None = Field(
        None, description="a splits_final.json (a list of {train, val} case ids) copied into the preprocessed "
                          "dataset before training; default: the dataset's own, else a random 5-fold split",
    )
    demo: DemoData | None = None

    @field_validator("patch_size")
    @classmethod
    def _patch(cls, value: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        configuration = info.data.get("configuration")
        dims = 2 if configuration == "2d" else 3
        if configuration is not None and len(value) != dims:
            example = [value[0] if value else 128] * dims
            other = "" if dims == 2 else "; or set configuration: 2d"
            raise ScalekitError(f"{list(value)} has {len(value)} size(s) but configuration {configuration!r} needs "
                             f"{dims}, e.g. {example}{other}")
        bad = [s for s in value if s < DIVISOR or s % DIVISOR]
        if bad:
            raise ScalekitError(f"{list(value)}: every size must be a multiple of {DIVISOR} (MedNeXt has 4 levels)")
        return value

    @field_validator("spacing")
    @classmethod
    def _spacing(cls, value: tuple[float, ...] | None, info: ValidationInfo) -> tuple[float, ...] | None:
        if value is None:
            return value
        if info.data.get("configuration") == "2d":
            raise ScalekitError("a target spacing can only be set for configuration 3d_fullres; remove it")
        if len(value) != 3 or min(value) <= 0:
            raise ScalekitError(f"{list(value)}: give 3 positive spacings in mm, e.g. [1.0, 1.0, 1.0]")
        return value

    @field_validator("fold", mode="before")
    @classmethod
    def _scored_fold(cls, value: object) -> object:
        if value == "all":
            raise ScalekitError("'all' trains on every case and leaves none to score a stage with; give a fold "
                                "number (0..4 for nnU-Net's five folds)")
        return value

    @model_validator(mode="after")
    def _named(self) -> DatasetSection:
        if self.name is None and self.id is None:
            raise ScalekitError(UNNAMED)
        return self

    @property
    def reference(self) -> str | int:
        """The dataset's nnU-Net name, else its id (a validated section has one of them)."""
        reference = self.name if self.name is not None else self.id
        if reference is None:
            raise ScalekitError(UNNAMED)
        return reference


class TrainingSection(_Model):
    """The budget and recipe of every chain stage (MedNeXt recipe: AdamW 1e-3, poly schedule, DS 16:8:4:2:1)."""

    epochs: Int = Field(1, ge=1, le=lim.MAX_EPOCHS, description="epochs per chain stage")
    iterations_per_epoch: Int = Field(recipe.ITERATIONS_PER_EPOCH, ge=1, le=lim.MAX_ITERATIONS)
    val_iterations: Int = Field(recipe.VAL_ITERATIONS, ge=1, le=lim.MAX_ITERATIONS)
    initial_lr: Float = Field(recipe.INITIAL_LR, gt=0, le=lim.MAX_LR)
    amp: Literal["auto", "fp16", "bf16", "none"] = "auto"
    checkpointing: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: as the family's preset says (on for M and L, and for deeper scaled families)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: Int = 0
    nsd_tolerance_mm: Float = Field(1.0, gt=0, le=lim.MAX_TOLERANCE_MM)


class FamilySpec(_Model):
    """An explicit family: base width C, nine block counts and nine expansion ratios (or one int for all)."""

    n_channels: Int = Field(32, ge=1, le=lim.MAX_CHANNELS)
    block_counts: Int | tuple[Int, ...] = 2
    exp_r: Int | tuple[Int, ...] = 4
    label: str = ""

    @field_validator("block_counts", "exp_r")
    @classmethod
    def _per_stage(cls, value: int | tuple[int, ...], info: ValidationInfo) -> int | tuple[int, ...]:
        if info.field_name is None:
            raise RuntimeError("a field validator was called without its field name")
        lim.check_per_stage(info.field_name, value)
        return value


class ScalingSpec(_Model):
    """Compound scaling: block counts and expansion ratios of a base preset times multipliers, widths C."""

    base: str = "S"
    depth: tuple[Annotated[Float, Field(le=lim.MAX_MULTIPLIER)], ...] = (1.0,)
    expansion: tuple[Annotated[Float, Field(le=lim.MAX_MULTIPLIER)], ...] = (1.0,)
    n_channels: tuple[Annotated[Int, Field(ge=1, le=lim.MAX_CHANNELS)], ...] = (32,)

    @field_validator("base")
    @classmethod
    def _base(cls, value: str) -> str:
        if value.upper() not in PRESETS:
            raise ScalekitError(f"unknown preset {value!r}; choose one of {', '.join(PRESETS)}")
        return value.upper()

    @field_validator("depth", "expansion")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or min(value) <= 0:
            raise ScalekitError(f"{list(value)}: give at least one positive multiplier")
        return value


class ResEncScalingSpec(_Model):
    """Compound scaling of a ResEnc preset: its features and its encoder's residual blocks per stage, each times
    a multiplier (every combination is a baseline)."""

    base: str = "M"
    features: tuple[Annotated[Float, Field(gt=0, le=lim.MAX_MULTIPLIER)], ...] = (1.0,)
    blocks: tuple[Annotated[Float, Field(gt=0, le=lim.MAX_MULTIPLIER)], ...] = (1.0,)

    @field_validator("base")
    @classmethod
    def _base(cls, value: str) -> str:
        if value.upper() not in RESENC_PRESETS:
            raise ScalekitError(f"unknown ResEnc preset {value!r}; choose one of {', '.join(RESENC_PRESETS)}")
        return value.upper()

    @field_validator("features", "blocks")
    @classmethod
    def _given(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ScalekitError("give at least one multiplier, e.g. [0.5, 1.0]")
        return value


class ResEncSpec(_Model):
    """nnU-Net's residual-encoder U-Net as baselines beside the MedNeXt search: every preset and every point of
    the scaling range trains (no sampler draws them) at the study's patch, as a one-stage chain through the same
    rungs, with nnU-Net's recipe (SGD, poly lr from ``initial_lr``)."""

    presets: tuple[str, ...] = ("M",)
    scaling: ResEncScalingSpec | None = None
    batch: Literal["planner", "study"] = Field(
        "planner", description="planner: the batch nnU-Net's planner gives each preset at the study's patch "
                               "(its memory target: M 8, L 24, XL 40 GB); study: dataset.batch_size")
    initial_lr: Float = Field(RESENC_LR, gt=0, le=lim.MAX_LR, description="nnU-Net's default: 1e-2")

    @field_validator("presets")
    @classmethod
    def _presets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        presets = tuple(p.upper() for p in value)
        unknown = [p for p in value if p.upper() not in RESENC_PRESETS]
        if unknown:
            raise ScalekitError(f"unknown ResEnc preset(s) {unknown}; choose from {', '.join(RESENC_PRESETS)}")
        if len(set(presets)) != len(presets):
            raise ScalekitError(f"{list(value)}: a preset is listed twice")
        return presets

    @model_validator(mode="after")
    def _distinct(self) -> ResEncSpec:
        if not (self.presets or self.scaling):
            raise ScalekitError("give presets or a scaling range, e.g. presets: [M, L]")
        if self.batch == "study" and len(self.presets) > 1:
            raise ScalekitError(
                f"presets {list(self.presets)} with batch: study are one network at one batch (at a given patch "
                "nnU-Net's presets differ only in the batch their planners choose): list one, or use batch: planner")
        return self


class SpaceSection(_Model):
    """Families to search over (the union of presets, explicit families and a scaling range) and the chain."""

    presets: tuple[str, ...] = ()
    preset_channels: Int | None = Field(None, ge=1, le=lim.MAX_CHANNELS,
                                        description="override C of the presets (e.g. 8 for a CPU demo)")
    families: tuple[FamilySpec, ...] = ()
    scaling: ScalingSpec | None = None
    kernels: tuple[Annotated[Int, Field(le=lim.MAX_KERNEL)], ...] = (3, 5, 7)
    resenc: ResEncSpec | None = Field(None, description="nnU-Net ResEnc baselines trained beside the search")

    @field_validator("presets")
    @classmethod
    def _presets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in value if p.upper() not in PRESETS]
        if unknown:
            raise ScalekitError(f"unknown preset(s) {unknown}; choose from {', '.join(PRESETS)}")
        presets = tuple(p.upper() for p in value)
        problem = lim.duplicate_presets(presets)
        if problem:
            raise ScalekitError(problem)
        return presets

    @field_validator("families")
    @classmethod
    def _families(cls, value: tuple[FamilySpec, ...], info: ValidationInfo) -> tuple[FamilySpec, ...]:
        # presets or preset_channels absent from info.data: invalid themselves (reported), so not compared
        known = "presets" in info.data and "preset_channels" in info.data
        problem = lim.duplicate_families(value, info.data["presets"] if known else None,
                                         info.data.get("preset_channels"))
        if problem:
            raise ScalekitError(problem)
        return value

    @field_validator("kernels")
    @classmethod
    def _kernels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ScalekitError("give at least one kernel size, e.g. [3, 5, 7]")
        bad = [k for k in value if k < 1 or k % 2 == 0]
        if bad:
            raise ScalekitError(f"{list(value)}: kernel sizes must be odd (3, 5, 7, ...)")
        if any(later <= earlier for earlier, later in zip(value, value[1:])):
            raise ScalekitError(
                f"{list(value)}: must increase, e.g. [3, 5, 7] (each UpKern stage starts from the previous kernel)"
            )
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> SpaceSection:
        if not (self.presets or self.families or self.scaling):
            raise ScalekitError("the space is empty: give presets, families or a scaling range")
        return self


class ChainSection(_Model):
    """Early stop of a chain (a stage must beat its parent's mean Dice by ``min_improvement`` to go on), and
    the controls trained beside each UpKern step."""

    min_improvement: Float | None = Field(
        0.0, description="Dice margin a stage must gain over its parent; null: never stop a chain early"
    )
    controls: tuple[Literal["continue"], ...] = Field(
        (), description="continue: beside each UpKern step, train the parent's kernel on from the same weights "
                        "for the same budget, so the step's gain separates the kernel from the extra training",
    )


class ObjectiveSpec(_Model):
    """One objective of the study file; see :class:`scalekit.records.Objective`."""

    metric: str
    direction: Literal["maximize", "minimize"] | None = None

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in OBJECTIVES:
            raise ScalekitError(f"unknown metric {value!r}; choose from {', '.join(OBJECTIVES)}")
        return value

    def goal(self) -> Objective:
        return Objective(self.metric, self.direction or "")

    @property
    def resolved_direction(self) -> str:
        return self.goal().direction


class ConstraintsSection(_Model):
    max_memory_gb: Float | None = Field(None, gt=0, le=lim.MAX_MEMORY_GB,
                                        description="peak training memory (GB = 2**30 bytes)")
    max_gflops: Float | None = Field(None, gt=0, le=lim.MAX_GFLOPS, description="training GFLOPs of one step")


class SearchSection(_Model):
    sampler: Literal["nsga2", "tpe", "grid", "random"] = "nsga2"
    families: Int = Field(4, ge=1, le=lim.MAX_FAMILIES, description="families to train (each runs its kernel chain)")
    seed: Int = 0
    scheduler: Literal["full", "halving"] = Field(
        "full", description="full: every stage trains training.epochs; halving: asynchronous successive "
                            "halving over rungs min_epochs, min_epochs*eta, ... up to training.epochs",
    )
    eta: Int = Field(3, ge=2, le=lim.MAX_ETA, description="halving: the top 1/eta of a rung is promoted")
    min_epochs: Int = Field(1, ge=1, le=lim.MAX_EPOCHS, description="halving: the first rung (epochs)")
    budget_gpu_hours: Float | None = Field(
        None, gt=0, le=lim.MAX_GPU_HOURS, description="no new work starts once the trials' device-hours reach this (GPU hours on GPUs)"
    )
    budget_epochs: Int | None = Field(None, ge=1, le=lim.MAX_BUDGET_EPOCHS, description="no new work starts after this many training epochs")


class ResourcesSection(_Model):
    """What one stage's worker takes, and how many run at once (on any backend)."""

    cpus_per_trial: Float = Field(1, gt=0, le=lim.MAX_CPUS)
    gpus_per_trial: Annotated[float, Strict(), Field(ge=0, le=lim.MAX_GPUS)] | Literal["auto"] = "auto"
    max_concurrent: Int = Field(1, ge=1, le=lim.MAX_CONCURRENT)


class BackendSection(_Model):
    """Where the stages train: ``ray`` (Ray Tune, here or on a cluster) or ``local`` (worker processes here);
    the names of :data:`scalekit.study.backend.BACKENDS`."""

    kind: Literal["ray", "local"] = "ray"
    address: str | None = Field(None, description="ray: an existing cluster ('auto' or 'ray://host:port'); "
                                                  "none: a Ray of the study's own on this machine")

    @model_validator(mode="after")
    def _local_has_no_address(self) -> BackendSection:
        if self.kind == "local" and self.address is not None:
            raise ScalekitError("the local backend runs on this machine: remove backend.address, or use kind: ray")
        return self


RAY_SECTION_NOTE = ("the `ray:` section is deprecated: write `resources: {cpus_per_trial, gpus_per_trial, "
                    "max_concurrent}` and `backend: {kind: ray, address: ...}` instead (read the same way for now)")


class ExportSpec(_Model):
    """Which stage to export when the study ends, and how (see ``scalekit study export``)."""

    select: str = "knee"
    to: Literal["nnunet", "config"] = "nnunet"
    force: Bool = Field(False, description="export even when the stages' Dice carry no signal (it says so)")

    @field_validator("select")
    @classmethod
    def _select(cls, value: str) -> str:
        rule = parse_rule(value)
        if rule.kind == "stage" and not STAGE_ID.fullmatch(rule.text):
            raise ScalekitError(
                f"{value!r} is not a selection rule; use best, knee, {BUDGET_RULE}24GB or a stage id such as "
                "f1a2b3c4d-k5 (scalekit study show lists them)"
            )
        return value


class ConfirmSpec(_Model):
    """Retrain the finalists (the answer's stage and every stage within noise of it) with other seeds."""

    seeds: Int = Field(2, ge=1, le=lim.MAX_SEEDS, description="other seeds (training.seed + 1, + 2, ...)")
    max_finalists: Int = Field(3, ge=1, le=lim.MAX_FINALISTS,
                               description="the answer's stage and at most this many minus one close to it")


class FinishSection(_Model):
    """What a study does once every chain has ended: confirm the finalists over other seeds, write the HTML
    report, export the chosen stage."""

    confirm: ConfirmSpec | None = None
    report: Bool = True
    export: ExportSpec | None = None


class StudyConfig(_Model):
    """A whole study file."""

    name: str
    output_dir: Path
    dataset: DatasetSection
    training: TrainingSection = TrainingSection()
    space: SpaceSection
    chain: ChainSection = ChainSection()
    objectives: tuple[ObjectiveSpec, ...] = (ObjectiveSpec(metric="mean_dice"), ObjectiveSpec(metric="peak_memory_gb"))
    constraints: ConstraintsSection = ConstraintsSection()
    search: SearchSection = SearchSection()
    resources: ResourcesSection = ResourcesSection()
    backend: BackendSection = BackendSection()
    storage: str | None = Field(None, description="Optuna storage URL; default: sqlite in the output directory")
    finish: FinishSection = FinishSection()

    @model_validator(mode="before")
    @classmethod
    def _ray_section(cls, data: Any) -> Any:
        """A study file written before ``resources:`` and ``backend:`` keeps loading: ``ray:``'s resources move
        to ``resources:`` and its address to ``backend:`` (see :data:`RAY_SECTION_NOTE`)."""
        if not isinstance(data, dict) or "ray" not in data:
            return data
        if "resources" in data or "backend" in data:
            raise ScalekitError("ray: give either the old `ray:` section or `resources:` and `backend:`, not both")
        data = dict(data)
        old = data.pop("ray")
        if not isinstance(old, dict):
            return {**data, "resources": old}  # reported as resources' own error
        old = dict(old)
        backend = {"kind": "ray", **({"address": old.pop("address")} if "address" in old else {})}
        return {**data, "resources": old, "backend": backend}

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ScalekitError(f"{value!r}: use letters, digits, '_', '-' and '.' only")
        return value

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: tuple[ObjectiveSpec, ...]) -> tuple[ObjectiveSpec, ...]:
        metrics = [o.metric for o in value]
        if not value:
            raise ScalekitError("give at least one objective, e.g. [{metric: mean_dice}]")
        if len(set(metrics)) != len(metrics):
            raise ScalekitError(f"{metrics}: an objective is listed twice")
        return value

    @model_validator(mode="after")
    def _enough_families(self) -> StudyConfig:
        if self.search.sampler == "grid" and self.space.scaling is None and len(self.space.presets) + len(
            self.space.families
        ) < self.search.families:
            raise ScalekitError(
                f"search.families={self.search.families} is more than the space's families; lower it or widen the space"
            )
        return self

    @model_validator(mode="after")
    def _rungs(self) -> StudyConfig:
        if self.search.scheduler == "halving" and self.search.min_epochs > self.training.epochs:
            raise ScalekitError(
                f"search.min_epochs={self.search.min_epochs} is more than training.epochs={self.training.epochs} "
                "(the full stage budget, the last rung); lower it"
            )
        return self

    @model_validator(mode="after")
    def _baselines_in_3d(self) -> StudyConfig:
        if self.space.resenc is not None and len(self.dataset.patch_size) != 3:
            raise ScalekitError("space.resenc: ResEnc baselines follow nnU-Net's 3-D planners; this study's patch "
                                f"{list(self.dataset.patch_size)} is not 3-D")
        return self

    @property
    def dim(self) -> int:
        return len(self.dataset.patch_size)

    def initial_lr(self, arch: str) -> float:
        """The learning rate a stage of network kind ``arch`` starts from: ``space.resenc.initial_lr`` for a
        ResEnc baseline, ``training.initial_lr`` for a MedNeXt."""
        if arch == RESENC_ARCH and self.space.resenc is not None:
            return self.space.resenc.initial_lr
        return self.training.initial_lr

    def data_roots(self) -> tuple[NnunetRoot, NnunetRoot]:
        """nnU-Net raw and preprocessed roots and where each came from, by the precedence of every command:
        the study's field (``dataset.raw_dir`` / ``dataset.preprocessed_dir``), else ``$nnUNet_raw`` /
        ``$nnUNet_preprocessed``, else the study's own ``<output_dir>/nnunet/raw`` / ``.../preprocessed``."""
        own = self.output_dir / "nnunet"
        raw = study_root(paths.RAW, self.dataset.raw_dir, "dataset.raw_dir", own / "raw")
        pre = study_root(paths.PREPROCESSED, self.dataset.preprocessed_dir, "dataset.preprocessed_dir",
                         own / "preprocessed")
        return raw, pre

    def nnunet_roots(self) -> tuple[Path, Path]:
        """The paths of :meth:`data_roots`."""
        raw, pre = self.data_roots()
        return raw.path, pre.path

    def raw_root_origin(self) -> str:
        """Where :meth:`nnunet_roots`' raw root comes from, in words (for messages about a missing dataset)."""
        return self.data_roots()[0].origin

    def resolve_paths(self, base: Path) -> StudyConfig:
        """Relative paths (output, nnU-Net folders) made absolute against ``base`` (the current directory)."""
        def absolute(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        d = self.dataset
        dataset = d.model_copy(update={"raw_dir": absolute(d.raw_dir), "preprocessed_dir": absolute(d.preprocessed_dir),
                                       "splits": absolute(d.splits)})
        return self.model_copy(update={"output_dir": absolute(self.output_dir), "dataset": dataset})
