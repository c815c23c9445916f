"""Study files: YAML validated into typed pydantic models, with every problem reported at once.

A study file names the dataset, the training budget of each chain stage, the search space, the objectives and
constraints, the search algorithm, where Ray runs and where everything is written. ``load_study_config`` reads
one and raises :class:`StudyConfigError` listing every problem with its field path and a hint.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scalekit.mednext.config import DIVISOR, NUM_STAGES
from scalekit.mednext.presets import PRESETS

OBJECTIVE_METRICS = {
    "mean_dice": "maximize",
    "mean_nsd": "maximize",
    "peak_memory_gb": "minimize",
    "gflops_train": "minimize",
    "gflops_fvcore": "minimize",
    "params": "minimize",
}
"""Metrics a study can optimise, with their natural direction."""


class StudyConfigError(ValueError):
    """A study file is missing, unreadable or invalid; the message lists every problem."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DemoData(_Model):
    """Generate the synthetic demo dataset (``scalekit data demo``) if the raw dataset does not exist yet."""

    cases: int = Field(24, ge=4)
    size: int = Field(64, ge=32)
    seed: int = 0


class DatasetSection(_Model):
    """The nnU-Net v2 dataset and how patches are drawn from it."""

    name: str | None = Field(None, description="nnU-Net dataset name, e.g. Dataset218_AMOS2022_postChallenge_task1")
    id: int | None = Field(None, ge=1, le=999, description="nnU-Net dataset id, e.g. 218")
    configuration: str = "3d_fullres"
    fold: int | Literal["all"] = 0
    patch_size: tuple[int, ...] = (128, 128, 128)
    batch_size: int = Field(2, ge=1)
    spacing: tuple[float, ...] | None = None
    raw_dir: Path | None = Field(None, description="nnUNet_raw; default: $nnUNet_raw or <output>/nnunet/raw")
    preprocessed_dir: Path | None = None
    demo: DemoData | None = None

    @field_validator("patch_size")
    @classmethod
    def _patch(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) not in (2, 3):
            raise ValueError(f"needs 2 or 3 sizes, got {list(value)}")
        bad = [s for s in value if s < DIVISOR or s % DIVISOR]
        if bad:
            raise ValueError(f"{list(value)}: every size must be a multiple of {DIVISOR} (MedNeXt has 4 levels)")
        return value

    @field_validator("spacing")
    @classmethod
    def _spacing(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (len(value) not in (2, 3) or min(value) <= 0):
            raise ValueError(f"{list(value)}: give 2 or 3 positive spacings in mm, e.g. [1.0, 1.0, 1.0]")
        return value

    @model_validator(mode="after")
    def _named(self) -> DatasetSection:
        if self.name is None and self.id is None:
            raise ValueError("give the dataset's nnU-Net name or id (dataset.name or dataset.id)")
        if self.spacing is not None and len(self.spacing) != len(self.patch_size):
            raise ValueError(f"spacing {list(self.spacing)} and patch_size {list(self.patch_size)} differ in length")
        return self


class TrainingSection(_Model):
    """The budget and recipe of every chain stage (MedNeXt recipe: AdamW 1e-3, poly schedule, DS 16:8:4:2:1)."""

    epochs: int = Field(1, ge=1, description="epochs per chain stage")
    iterations_per_epoch: int = Field(250, ge=1)
    val_iterations: int = Field(50, ge=1)
    initial_lr: float = Field(1e-3, gt=0)
    amp: Literal["auto", "fp16", "bf16", "none"] = "auto"
    checkpointing: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: as the family's preset says (on for M and L, and for deeper scaled families)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    nsd_tolerance_mm: float = Field(1.0, gt=0)


class FamilySpec(_Model):
    """An explicit family: base width C, nine block counts and nine expansion ratios (or one int for all)."""

    n_channels: int = Field(32, ge=1)
    block_counts: int | tuple[int, ...] = 2
    exp_r: int | tuple[int, ...] = 4
    label: str = ""

    @field_validator("block_counts", "exp_r")
    @classmethod
    def _nine(cls, value: int | tuple[int, ...]) -> int | tuple[int, ...]:
        values = (value,) if isinstance(value, int) else value
        if not isinstance(value, int) and len(value) != NUM_STAGES:
            raise ValueError(f"needs one int or {NUM_STAGES} ints (enc0..enc3, bottleneck, dec3..dec0), got {len(value)}")
        if min(values) < 1:
            raise ValueError(f"{list(values)}: entries must be >= 1")
        return value


class ScalingSpec(_Model):
    """Compound scaling: block counts and expansion ratios of a base preset times multipliers, widths C."""

    base: str = "S"
    depth: tuple[float, ...] = (1.0,)
    expansion: tuple[float, ...] = (1.0,)
    n_channels: tuple[int, ...] = (32,)

    @field_validator("base")
    @classmethod
    def _base(cls, value: str) -> str:
        if value.upper() not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; choose one of {', '.join(PRESETS)}")
        return value.upper()

    @field_validator("depth", "expansion")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or min(value) <= 0:
            raise ValueError(f"{list(value)}: give at least one positive multiplier")
        return value


class SpaceSection(_Model):
    """Families to search over (the union of presets, explicit families and a scaling range) and the chain."""

    presets: tuple[str, ...] = ()
    preset_channels: int | None = Field(None, ge=1, description="override C of the presets (e.g. 8 for a CPU demo)")
    families: tuple[FamilySpec, ...] = ()
    scaling: ScalingSpec | None = None
    kernels: tuple[int, ...] = (3, 5, 7)

    @field_validator("presets")
    @classmethod
    def _presets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in value if p.upper() not in PRESETS]
        if unknown:
            raise ValueError(f"unknown preset(s) {unknown}; choose from {', '.join(PRESETS)}")
        return tuple(p.upper() for p in value)

    @field_validator("kernels")
    @classmethod
    def _kernels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("give at least one kernel size, e.g. [3, 5, 7]")
        bad = [k for k in value if k < 1 or k % 2 == 0]
        if bad:
            raise ValueError(f"{list(value)}: kernel sizes must be odd (3, 5, 7, ...)")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> SpaceSection:
        if not (self.presets or self.families or self.scaling):
            raise ValueError("the space is empty: give presets, families or a scaling range")
        return self


class ChainSection(_Model):
    """Early stop of a chain: a stage must beat its parent's mean Dice by ``min_improvement`` to go on."""

    min_improvement: float | None = Field(
        0.0, description="Dice margin a stage must gain over its parent; null: never stop a chain early"
    )


class Objective(_Model):
    metric: str
    direction: Literal["maximize", "minimize"] | None = None

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in OBJECTIVE_METRICS:
            raise ValueError(f"unknown metric {value!r}; choose from {', '.join(OBJECTIVE_METRICS)}")
        return value

    @property
    def resolved_direction(self) -> str:
        return self.direction or OBJECTIVE_METRICS[self.metric]


class ConstraintsSection(_Model):
    max_memory_gb: float | None = Field(None, gt=0, description="peak training memory (GB = 2**30 bytes)")
    max_gflops: float | None = Field(None, gt=0, description="training GFLOPs of one step")


class SearchSection(_Model):
    sampler: Literal["nsga2", "tpe", "grid", "random"] = "nsga2"
    families: int = Field(4, ge=1, description="families to train (each runs its kernel chain)")
    seed: int = 0


class RaySection(_Model):
    address: str | None = Field(None, description="an existing cluster ('auto' or 'ray://host:port'); none: local")
    cpus_per_trial: float = Field(1, gt=0)
    gpus_per_trial: float | Literal["auto"] = "auto"
    max_concurrent: int = Field(1, ge=1)


class ExportSpec(_Model):
    """Which stage to export when the study ends, and how (see ``scalekit study export``)."""

    select: str = "knee"
    to: Literal["nnunet", "config"] = "nnunet"


class FinishSection(_Model):
    """What a study writes once every chain has ended: the HTML report, and an export of the chosen stage."""

    report: bool = True
    export: ExportSpec | None = None


class StudyConfig(_Model):
    """A whole study file."""

    name: str
    output_dir: Path
    dataset: DatasetSection
    training: TrainingSection = TrainingSection()
    space: SpaceSection
    chain: ChainSection = ChainSection()
    objectives: tuple[Objective, ...] = (Objective(metric="mean_dice"), Objective(metric="peak_memory_gb"))
    constraints: ConstraintsSection = ConstraintsSection()
    search: SearchSection = SearchSection()
    ray: RaySection = RaySection()
    storage: str | None = Field(None, description="Optuna storage URL; default: sqlite in the output directory")
    finish: FinishSection = FinishSection()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError(f"{value!r}: use letters, digits, '_', '-' and '.' only")
        return value

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: tuple[Objective, ...]) -> tuple[Objective, ...]:
        metrics = [o.metric for o in value]
        if not value:
            raise ValueError("give at least one objective, e.g. [{metric: mean_dice}]")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"{metrics}: an objective is listed twice")
        return value

    @model_validator(mode="after")
    def _enough_families(self) -> StudyConfig:
        if self.search.sampler == "grid" and self.space.scaling is None and len(self.space.presets) + len(
            self.space.families
        ) < self.search.families:
            raise ValueError(
                f"search.families={self.search.families} is more than the space's families; lower it or widen the space"
            )
        return self

    @property
    def dim(self) -> int:
        return len(self.dataset.patch_size)

    def nnunet_roots(self) -> tuple[Path, Path]:
        """nnU-Net raw and preprocessed roots: the study's, else $nnUNet_raw, else under the output directory."""
        env_raw = os.environ.get("nnUNet_raw")
        raw = self.dataset.raw_dir or (Path(env_raw) if env_raw else self.output_dir / "nnunet" / "raw")
        return raw, self.dataset.preprocessed_dir or self.output_dir / "nnunet" / "preprocessed"

    def resolve_paths(self, base: Path) -> StudyConfig:
        """Relative paths (output, nnU-Net folders) made absolute against ``base`` (the current directory)."""
        def absolute(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        dataset = self.dataset.model_copy(
            update={"raw_dir": absolute(self.dataset.raw_dir), "preprocessed_dir": absolute(self.dataset.preprocessed_dir)}
        )
        return self.model_copy(update={"output_dir": absolute(self.output_dir), "dataset": dataset})


_HINTS = {
    "missing": "this field is required",
    "extra_forbidden": "unknown field: check its spelling against the documented study format",
    "literal_error": "",
    "int_parsing": "give a whole number",
    "float_parsing": "give a number",
}


def _format_error(error: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    hint = _HINTS.get(error["type"], "")
    return f"{path}: {message}" + (f" ({hint})" if hint and hint not in message else "")


def study_problems(data: Any) -> list[str]:
    """Every problem of a parsed study document, each as ``field.path: message (hint)``; empty if valid."""
    if not isinstance(data, dict):
        return [f"(top level): expected a mapping of sections, got {type(data).__name__}"]
    try:
        StudyConfig.model_validate(data)
    except ValidationError as err:
        return [_format_error(e) for e in err.errors()]
    return []


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file with the safe loader; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise StudyConfigError(f"study file {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StudyConfigError(f"{path} is not valid YAML: {err}") from None


def load_study_config(path: str | Path, base: Path | None = None) -> StudyConfig:
    """Read and validate a study file; relative paths resolve against ``base`` (default: current directory)."""
    data = read_yaml(path)
    problems = study_problems(data)
    if problems:
        listing = "\n  ".join(problems)
        raise StudyConfigError(f"{path}: {len(problems)} problem(s):\n  {listing}")
    return StudyConfig.model_validate(data).resolve_paths(base or Path.cwd())

