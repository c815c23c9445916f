"""The search space: MedNeXt families (width C, block counts B, expansion ratios R) and their kernel chains, and
the baselines trained beside them (nnU-Net's residual-encoder U-Net).

A :class:`Family` fixes everything but the kernel; its chain (default 3 -> 5 -> 7) trains the same family with
growing kernels, each stage initialised by UpKern from the one before. A :class:`SearchSpace` is the finite
set of families a study may pick from: named presets, explicit families, and a compound-scaling range
(depth and expansion multipliers of a base preset's B and R, times base widths C). Its ``baselines``
(:class:`ResEncFamily`) are not searched: every one is trained, through the same rungs, so that the answer can
say whether a MedNeXt is worth it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from scalekit.errors import ScalekitError
from scalekit.networks import NetworkConfig, ResEncConfig
from scalekit.networks.mednext import PRESETS, MedNeXt, MedNeXtConfig, per_stage
from scalekit.networks.resenc import PRESETS as RESENC_PRESETS
from scalekit.records import make_stage_id


@dataclass(frozen=True)
class Family:
    """A MedNeXt without its kernel size. ``family_id`` is stable: a hash of (C, B, R)."""

    n_channels: int
    block_counts: tuple[int, ...]
    exp_r: tuple[int, ...]
    label: str = field(default="", compare=False)
    checkpointing: bool = field(default=False, compare=False)
    axes: tuple[tuple[str, float], ...] = field(default=(), compare=False)
    """Its coordinates in a compound-scaling range (``depth``, ``expansion``, ``n_channels``); empty otherwise."""
    arch: ClassVar[str] = MedNeXtConfig.arch
    kernels: ClassVar[tuple[int, ...]] = ()
    """Its chain's kernels: empty, the space's chain (``SearchSpace.kernels``)."""
    batch_size: ClassVar[int | None] = None
    """The study's batch size."""
    can_checkpoint: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_counts", per_stage("block_counts", self.block_counts))
        object.__setattr__(self, "exp_r", per_stage("exp_r", self.exp_r))
        MedNeXtConfig(n_channels=self.n_channels, block_counts=self.block_counts, exp_r=self.exp_r)

    @classmethod
    def of(cls, n_channels: int, block_counts: int | Sequence[int], exp_r: int | Sequence[int],
           label: str = "") -> Family:
        """A family from one int for all nine stages or nine ints, for each of B and R."""
        return cls(n_channels, per_stage("block_counts", block_counts), per_stage("exp_r", exp_r), label)

    @property
    def family_id(self) -> str:
        key = json.dumps([self.n_channels, list(self.block_counts), list(self.exp_r)])
        return "f" + hashlib.sha1(key.encode()).hexdigest()[:8]

    @property
    def name(self) -> str:
        """The label if given, else a compact description such as ``C8-B2x9-R2x9``."""
        if self.label:
            return self.label

        def compact(values: tuple[int, ...]) -> str:
            return f"{values[0]}x9" if len(set(values)) == 1 else "-".join(map(str, values))

        return f"C{self.n_channels}-B{compact(self.block_counts)}-R{compact(self.exp_r)}"

    def stage_id(self, kernel: int) -> str:
        return make_stage_id(self.family_id, kernel)

    @property
    def descriptors(self) -> dict[str, float]:
        """The network in three numbers: its width ``n_channels`` (C), ``blocks`` (the total block count, the
        sum of B) and ``exp_r`` (the mean expansion ratio R, two decimals)."""
        return {"n_channels": self.n_channels, "blocks": sum(self.block_counts),
                "exp_r": round(sum(self.exp_r) / len(self.exp_r), 2)}

    def config(self, kernel: int, template: NetworkConfig) -> MedNeXtConfig:
        """This family at one kernel size; the template gives channels, classes, dim and other options."""
        if not isinstance(template, MedNeXtConfig):
            raise TypeError(f"a MedNeXt family needs a MedNeXtConfig template, got {type(template).__name__}")
        return template.replace(
            n_channels=self.n_channels,
            block_counts=self.block_counts,
            exp_r=self.exp_r,
            kernel_size=kernel,
        )

    def build(self, kernel: int, template: MedNeXtConfig) -> MedNeXt:
        """The network of this family at one kernel size."""
        return MedNeXt(self.config(kernel, template))

    @classmethod
    def from_preset(cls, name: str, n_channels: int | None = None) -> Family:
        p = PRESETS[name.upper()]
        width = n_channels or p.n_channels
        label = name.upper() if width == p.n_channels else f"{name.upper()}-C{width}"
        return cls(width, p.block_counts, p.exp_r, label, p.checkpointing)


def scale_family(base: str, depth: float, expansion: float, n_channels: int) -> Family:
    """Compound scaling of a preset: B and R multiplied (rounded half up, at least 1), width C set.

    Checkpointing is switched on when the scaled network is at least as deep as MedNeXt-M (as the paper does
    for M and L), measured by the total block count.
    """
    p = PRESETS[base.upper()]
    blocks, ratios = _scaled(p.block_counts, depth), _scaled(p.exp_r, expansion)
    label = f"{base.upper()}-d{depth:g}-e{expansion:g}-C{n_channels}"
    deep = sum(blocks) >= sum(PRESETS["M"].block_counts)
    return Family(n_channels, blocks, ratios, label, deep, (("depth", depth), ("expansion", expansion),
                                                           ("n_channels", n_channels)))


class ChainFamily(Protocol):
    """What the study engine needs of a family of any kind: its id and name, its network at a kernel size of
    its chain, the chain's kernels (empty: the space's), whether it checkpoints and its batch size."""

    arch: ClassVar[str]
    kernels: ClassVar[tuple[int, ...]]
    can_checkpoint: ClassVar[bool]

    @property
    def family_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def checkpointing(self) -> bool: ...

    @property
    def batch_size(self) -> int | None: ...

    def stage_id(self, kernel: int) -> str: ...

    def config(self, kernel: int, template: NetworkConfig) -> NetworkConfig: ...


def _scaled(values: Sequence[int], factor: float) -> tuple[int, ...]:
    """Each value times ``factor``, rounded half up, at least 1."""
    return tuple(max(1, math.floor(v * factor + 0.5)) for v in values)


@dataclass(frozen=True)
class ResEncFamily:
    """nnU-Net's residual-encoder U-Net at the study's patch, as a one-stage chain (no kernel growth: UpKern does
    not apply; its rungs are more epochs).

    ``preset`` (``M``, ``L``, ``XL``) is nnU-Net's memory target; at one patch the three build the same
    network and differ in the batch nnU-Net's planner gives it there (``batch_size``, set by the study when it
    plans the family; None: the study's). ``features`` and ``blocks`` multiply the features and the encoder's
    residual blocks of every stage (rounded half up, at least 1): the family's compound scaling.
    """

    preset: str = "M"
    features: float = 1.0
    blocks: float = 1.0
    batch_size: int | None = field(default=None, compare=False)
    arch: ClassVar[str] = ResEncConfig.arch
    kernels: ClassVar[tuple[int, ...]] = (3,)
    """nnU-Net's 3x3x3 convolutions; the stage's real kernels (per axis, per stage) come from the topology."""
    checkpointing: ClassVar[bool] = False
    can_checkpoint: ClassVar[bool] = False
    """nnU-Net's ResEnc does not checkpoint."""

    def __post_init__(self) -> None:
        if self.preset not in RESENC_PRESETS:
            raise ScalekitError(f"ResEnc preset {self.preset!r} is unknown; choose one of {', '.join(RESENC_PRESETS)}")
        if self.features <= 0 or self.blocks <= 0:
            raise ScalekitError(f"ResEnc multipliers must be positive, got features={self.features:g}, "
                                f"blocks={self.blocks:g}")

    @property
    def family_id(self) -> str:
        key = json.dumps([self.arch, self.preset, self.features, self.blocks])
        return "f" + hashlib.sha1(key.encode()).hexdigest()[:8]

    @property
    def axes(self) -> tuple[tuple[str, float], ...]:
        """Its coordinates in the ResEnc scaling range (``features``, ``blocks``), empty at the preset."""
        if self.features == 1.0 and self.blocks == 1.0:
            return ()
        return (("features", self.features), ("blocks", self.blocks))

    @property
    def name(self) -> str:
        """``ResEnc L``, or ``ResEnc L-f0.5-b1`` for a scaled one."""
        scaled = f"-f{self.features:g}-b{self.blocks:g}" if self.axes else ""
        return f"ResEnc {self.preset}{scaled}"

    def stage_id(self, kernel: int = 3) -> str:
        return make_stage_id(self.family_id, kernel)

    def config(self, kernel: int, template: NetworkConfig) -> ResEncConfig:
        """This family on the topology ``template`` (nnU-Net's ResEnc for the study's patch and spacing)."""
        if not isinstance(template, ResEncConfig):
            raise TypeError(f"a ResEnc family needs a ResEncConfig template, got {type(template).__name__}")
        return dataclasses.replace(template, features_per_stage=_scaled(template.features_per_stage, self.features),
                                   n_blocks_per_stage=_scaled(template.n_blocks_per_stage, self.blocks))


FAMILY_INDEX = "family_index"
"""The axis of a space's listed families (presets and explicit ones): the index into that list."""
SOURCE = "source"
"""The axis that picks listed families or the scaling range, in a space that has both."""
SCALING_AXES = ("depth", "expansion", "n_channels")


@dataclass(frozen=True)
class SearchSpace:
    """A finite, ordered, duplicate-free set of families and the kernel chain every family runs."""

    families: tuple[Family, ...]
    kernels: tuple[int, ...] = (3, 5, 7)
    seeds: tuple[str, ...] = ()
    """Family ids to try first (the presets and explicit families), before the search explores."""
    scaling_base: str = ""
    """The preset that the scaled families (those with ``axes``) scale."""
    baselines: tuple[ResEncFamily, ...] = ()
    """Families of other kinds trained beside the search, every one (no sampler draws them)."""

    def __post_init__(self) -> None:
        if not self.families:
            raise ScalekitError("a search space needs at least one family")
        unique: dict[str, Family] = {}
        for fam in self.families:
            unique.setdefault(fam.family_id, fam)
        object.__setattr__(self, "families", tuple(unique.values()))
        object.__setattr__(self, "baselines", tuple({b.family_id: b for b in self.baselines}.values()))
        if any(k % 2 == 0 or k < 1 for k in self.kernels):
            raise ScalekitError(f"kernel chain {list(self.kernels)} must hold odd kernel sizes")

    def __len__(self) -> int:
        return len(self.families)

    def by_id(self, family_id: str) -> Family:
        for fam in self.families:
            if fam.family_id == family_id:
                return fam
        raise KeyError(f"family {family_id} is not in this search space")

    def ids(self) -> list[str]:
        return [f.family_id for f in self.families]

    @property
    def trained(self) -> tuple[ChainFamily, ...]:
        """Every family a study may train: the searched ones, then the baselines."""
        return (*self.families, *self.baselines)

    def family(self, family_id: str) -> ChainFamily:
        """A searched family or a baseline, by id."""
        for baseline in self.baselines:
            if baseline.family_id == family_id:
                return baseline
        return self.by_id(family_id)

    def chain(self, family_id: str) -> tuple[int, ...]:
        """The kernels of a family's chain (the space's, or a baseline's own single stage)."""
        return self.family(family_id).kernels or self.kernels

    @property
    def listed(self) -> list[Family]:
        """The families that are not points of the scaling range (presets, explicit families), in order."""
        return [f for f in self.families if not f.axes]

    def labels(self) -> dict[str, Family]:
        """The listed families by name, the smallest network first (by width, total blocks, mean expansion ratio
        and id: an order that does not depend on how the study lists them); a name that two listed families
        share is followed by the family id."""
        def size(family: Family) -> tuple:
            return (*family.descriptors.values(), family.family_id)

        names = [f.name for f in self.listed]
        return {f.name if names.count(f.name) == 1 else f"{f.name} ({f.family_id})": f
                for f in sorted(self.listed, key=size)}

    def axis_choices(self) -> dict[str, list]:
        """The space's scaling axes, each with its values, as a sampler sees them: ``family_index`` over the
        listed families, ``depth`` / ``expansion`` / ``n_channels`` over the scaling range, and ``source``
        (``listed`` or ``scaling``) when the space has both."""
        scaled = [dict(f.axes) for f in self.families if f.axes]
        choices: dict[str, list] = {}
        if self.listed and scaled:
            choices[SOURCE] = ["listed", "scaling"]
        if self.listed:
            choices[FAMILY_INDEX] = list(range(len(self.listed)))
        for axis in SCALING_AXES:
            values = sorted({point[axis] for point in scaled})
            if values:
                choices[axis] = values
        return choices

    def point_axes(self, source: str | None = None) -> list[str]:
        """The axes besides ``source`` that a point drawn from ``source`` (``listed`` or ``scaling``) has;
        without one, those of the only kind of family the space has."""
        if source is None:
            source = "listed" if self.listed else "scaling"
        return [FAMILY_INDEX] if source == "listed" else list(SCALING_AXES)

    def family_at(self, point: dict[str, float]) -> Family:
        """The family at a point of :meth:`axis_choices` (a scaling point whose rounding repeats another family
        gives that family)."""
        if FAMILY_INDEX in point:
            return self.listed[int(point[FAMILY_INDEX])]
        family = scale_family(self.scaling_base, point["depth"], point["expansion"], int(point["n_channels"]))
        return self.by_id(family.family_id)

    @classmethod
    def build(
        cls,
        presets: Iterable[str] = (),
        families: Iterable[Family] = (),
        scaling: tuple[str, Sequence[float], Sequence[float], Sequence[int]] | None = None,
        kernels: Sequence[int] = (3, 5, 7),
        preset_channels: int | None = None,
        baselines: Iterable[ResEncFamily] = (),
    ) -> SearchSpace:
        """Union of presets, explicit families and a scaling range ``(base, depths, expansions, widths)``, with
        ``baselines`` beside them."""
        seeded = [Family.from_preset(p, preset_channels) for p in presets] + list(families)
        scaled, base = [], ""
        if scaling is not None:
            base, depths, expansions, widths = scaling
            scaled = [scale_family(base, d, e, c) for c in widths for d in depths for e in expansions]
        return cls(tuple(seeded + scaled), tuple(kernels), tuple(f.family_id for f in seeded), base, tuple(baselines))
