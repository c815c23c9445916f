"""Compound scaling: what moving along each scaling axis bought in a study, and whether moving along several
at once bought more than moving along one at the same cost.

The axes are the block counts B (depth), the expansion ratio R and the channels C (width), and the kernel
size k. A *single-axis move* is a pair of completed stages that differ in one axis alone: the same
configuration otherwise (gradient checkpointing aside: it changes memory, not the network) and, for B, R and
C, the same kernel and initialisation; a kernel move stays within one family (C, B and R equal), so it is a
step (or two) of an UpKern chain. A *compound move* changes several axes, all upwards. Every move is oriented
from the smaller to the larger network. Costs: peak memory (GiB) and training compute since scratch (TFLOP,
``cum_train_tflops``: a kernel move pays for the chain's earlier stages too). Continuation controls are left
out (they change training, not the network). Moves stay within one network kind: a ResEnc baseline's width C
(its first stage's features) and blocks B move against another ResEnc at the same batch, never against a
MedNeXt.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

from scalekit.results.fidelity import bootstrap_interval, holds_zero, noise
from scalekit.records import DEFAULT_ARCH, StageRecord
from scalekit.space import Family
from scalekit.results.tables import Table

AXES = {"B": "depth (block counts B)", "R": "expansion ratio R", "C": "width (channels C)", "k": "kernel size k"}
EQUAL_COST = 0.25
"""A single-axis move is of equal cost to a compound move when its ΔGiB is within this fraction of the other's."""
NOT_NETWORK = {"n_channels", "block_counts", "exp_r", "enc_kernel_size", "dec_kernel_size", "checkpointing",
               "features_per_stage", "n_blocks_per_stage"}
"""Config fields that are either an axis or do not change the network's function."""
TINY = 1e-9
MIN_GIB = 0.01
"""Below this memory change (about 10 MiB, the resolution of the memory figures) ΔDice per GiB is not given: a
ratio over a cost that small only magnifies noise."""


def axis_value(record: StageRecord, axis: str) -> int | tuple[int, ...]:
    values: dict[str, Callable[[], int | tuple[int, ...]]] = {
        "B": lambda: tuple(record.block_counts), "R": lambda: tuple(record.exp_r),
        "C": lambda: record.n_channels, "k": lambda: record.kernel_size,
    }
    return values[axis]()


def _size(value: int | tuple[int, ...]) -> float:
    return float(sum(value)) if isinstance(value, tuple) else float(value)


def _show(value: int | tuple[int, ...]) -> str:
    if isinstance(value, int):
        return str(value)
    return str(value[0]) if len(set(value)) == 1 else "-".join(map(str, value))


def _per(gain: float, cost: float | None, least: float = TINY) -> float | None:
    return None if cost is None or cost < least else gain / cost


def _case_gains(small: StageRecord, large: StageRecord) -> tuple[float, ...]:
    """Each validation case's Dice gain from ``small`` to ``large`` (empty unless scored on the same cases)."""
    if not small.case_dice or len(small.case_dice) != len(large.case_dice):
        return ()
    return tuple(b - a for a, b in zip(small.case_dice, large.case_dice))


@dataclass(frozen=True)
class ScalingMove:
    """Two completed stages, the smaller first, and what the larger one gained and cost."""

    axes: tuple[str, ...]
    from_id: str
    to_id: str
    change: str
    """Each changed axis with its two values, e.g. ``B 1→2, C 4→8``."""
    d_dice: float
    d_gib: float | None
    d_tflop: float | None
    case_gains: tuple[float, ...] = ()
    """Each validation case's Dice gain (empty when the two were not scored on the same cases)."""
    interval: tuple[float, float] | None = None
    """The 95% interval of ``d_dice``, paired over the validation cases."""

    @property
    def compound(self) -> bool:
        return len(self.axes) > 1

    @property
    def within_noise(self) -> bool:
        return holds_zero(self.interval)

    @property
    def dice_per_gib(self) -> float | None:
        return _per(self.d_dice, self.d_gib, MIN_GIB)

    @property
    def dice_per_tflop(self) -> float | None:
        return _per(self.d_dice, self.d_tflop)


@dataclass(frozen=True)
class CompoundComparison:
    """A compound move against the single-axis move of the highest ΔDice at equal memory cost (if any)."""

    move: ScalingMove
    best_single: ScalingMove | None

    @property
    def margin(self) -> float | None:
        """How much more Dice the compound move gained than that single-axis move."""
        return None if self.best_single is None else self.move.d_dice - self.best_single.d_dice

    @property
    def margin_interval(self) -> tuple[float, float] | None:
        """The 95% interval of :attr:`margin`, paired over the validation cases."""
        rival = self.best_single
        if rival is None or not self.move.case_gains or len(rival.case_gains) != len(self.move.case_gains):
            return None
        return bootstrap_interval([a - b for a, b in zip(self.move.case_gains, rival.case_gains)])

    def verdict(self) -> str:
        margin = self.margin
        if margin is None:
            return "no single-axis move of equal memory"
        interval = self.margin_interval
        if holds_zero(interval):
            return f"within noise ({margin:+.4f}{noise(interval).split(',')[0]})"
        return (f"compound ahead by {margin:+.4f}" if margin > 0 else f"single axis ahead by {-margin:.4f}") + \
            noise(interval)


@dataclass(frozen=True)
class ScalingView:
    single: list[ScalingMove]
    compound: list[CompoundComparison]
    missing: dict[str, str]
    """Axis -> what to add to the space where the study has no single-axis move along it."""

    def along(self, axis: str) -> list[ScalingMove]:
        return [m for m in self.single if m.axes == (axis,)]


def _rest(record: StageRecord) -> dict:
    return {k: v for k, v in record.config.items() if k not in NOT_NETWORK}


def _same_network_otherwise(a: StageRecord, b: StageRecord) -> bool:
    """Whether two stages are one kind of network, trained at one batch, alike but for the scaling axes."""
    if a.arch != b.arch or a.batch_size != b.batch_size:
        return False
    return not a.config or not b.config or _rest(a) == _rest(b)


def scaling_move(a: StageRecord, b: StageRecord) -> ScalingMove | None:
    """The move between two stages, or None: same network, an axis up and another down, or (without a
    kernel change) different initialisations."""
    changed = tuple(axis for axis in AXES if axis_value(a, axis) != axis_value(b, axis))
    if not changed or not _same_network_otherwise(a, b) or ("k" not in changed and a.init != b.init):
        return None
    signs = {_size(axis_value(b, axis)) > _size(axis_value(a, axis)) for axis in changed}
    ties = any(_size(axis_value(b, axis)) == _size(axis_value(a, axis)) for axis in changed)
    if len(signs) > 1 or ties:
        return None
    small, large = (a, b) if signs == {True} else (b, a)
    if small.mean_dice is None or large.mean_dice is None:
        raise ValueError(f"{small.stage_id} and {large.stage_id}: a scaling move is between two completed stages")
    change = ", ".join(f"{axis} {_show(axis_value(small, axis))}→{_show(axis_value(large, axis))}"
                       for axis in changed)
    gib = None if small.peak_memory_gb is None or large.peak_memory_gb is None else \
        large.peak_memory_gb - small.peak_memory_gb
    tflop = None if small.cum_train_tflops is None or large.cum_train_tflops is None else \
        large.cum_train_tflops - small.cum_train_tflops
    gains = _case_gains(small, large)
    return ScalingMove(changed, small.stage_id, large.stage_id, change,
                       large.mean_dice - small.mean_dice, gib, tflop,
                       gains, bootstrap_interval(gains))


def _equal_cost(move: ScalingMove, single: Sequence[ScalingMove]) -> ScalingMove | None:
    if move.d_gib is None or move.d_gib <= TINY:
        return None
    near = [s for s in single if s.d_gib is not None and abs(s.d_gib - move.d_gib) <= EQUAL_COST * move.d_gib]
    return max(near, key=lambda s: (s.d_dice, s.to_id), default=None)


def _suggestion(axis: str, valid: Sequence[StageRecord]) -> str:
    lead = f"no single-axis pairs for {AXES[axis]}"
    if not valid:
        return f"{lead}: no completed stage yet"
    best = max(valid, key=lambda r: (r.mean_dice, r.stage_id))
    if axis == "k":
        return (f"{lead}: no family has two completed kernel sizes; let a chain run on from k{best.kernel_size} "
                f"(space.kernels, e.g. [3, 5, 7])")
    base = Family(best.n_channels, tuple(best.block_counts), tuple(best.exp_r))
    field = {"B": "block_counts", "R": "exp_r", "C": "n_channels"}[axis]
    doubled = Family(
        base.n_channels * (2 if axis == "C" else 1),
        tuple(2 * b for b in base.block_counts) if axis == "B" else base.block_counts,
        tuple(2 * r for r in base.exp_r) if axis == "R" else base.exp_r,
    )
    return (f"{lead}: add a family like {doubled.name} ({field} of {best.family_label or base.name}, the best "
            f"stage's family, doubled)")


def scaling_view(records: Sequence[StageRecord]) -> ScalingView:
    """Every single-axis and compound move between the completed stages (controls left out), each compound
    move with its equal-cost single-axis rival, and a suggestion for each axis without a move."""
    valid = [r for r in records if r.is_valid and not r.is_control]
    moves = [m for a, b in combinations(valid, 2) if (m := scaling_move(a, b)) is not None]
    single = [m for m in moves if not m.compound]
    compound = [CompoundComparison(m, _equal_cost(m, single)) for m in moves if m.compound]
    axes_seen = {m.axes[0] for m in single}
    mednext = [r for r in valid if r.arch == DEFAULT_ARCH]  # the suggestions name MedNeXt families
    return ScalingView(single, compound, {a: _suggestion(a, mednext) for a in AXES if a not in axes_seen})


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _signed(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def _noisy(moves: Sequence[ScalingMove]) -> str:
    """How many of the ``moves`` with a known interval gained Dice within noise: ``2 of 3`` (``—``: none known)."""
    known = [m for m in moves if m.interval is not None]
    return f"{sum(m.within_noise for m in known)} of {len(known)}" if known else "—"


def scaling_tables(view: ScalingView) -> list[Table]:
    """Per axis (medians), every single-axis move, every compound move against its equal-cost rival."""
    per_axis = [[AXES[a], str(len(view.along(a))), _signed(_median([m.d_dice for m in view.along(a)]), 3),
                 _noisy(view.along(a)), _signed(_median([m.dice_per_gib for m in view.along(a)]), 4),
                 _signed(_median([m.dice_per_tflop for m in view.along(a)]), 5)] for a in AXES if view.along(a)]
    moves = [[m.axes[0], f"{m.from_id} → {m.to_id}", m.change, _signed(m.d_dice, 4) + noise(m.interval),
              _signed(m.d_gib, 3), _signed(m.d_tflop, 2), _signed(m.dice_per_gib, 4), _signed(m.dice_per_tflop, 5)]
             for m in view.single]
    compound = []
    for c in view.compound:
        rival = c.best_single
        compound.append([f"{c.move.from_id} → {c.move.to_id}", c.move.change,
                         _signed(c.move.d_dice, 4) + noise(c.move.interval), _signed(c.move.d_gib, 3),
                         _signed(c.move.dice_per_gib, 4),
                         "—" if rival is None else f"{rival.from_id} → {rival.to_id} ({rival.change})",
                         "—" if rival is None else _signed(rival.d_dice, 4), c.verdict()])
    cost = ["ΔGiB", "Δ training TFLOP", "ΔDice per GiB", "ΔDice per TFLOP"]
    return [
        Table("What each scaling axis bought (medians over its single-axis moves; a kernel move includes the "
              "chain's extra training, which the continuation controls separate)",
              ["axis", "moves", "ΔDice", "within noise", "ΔDice per GiB", "ΔDice per TFLOP"], per_axis),
        Table("Single-axis moves: completed stages that differ in one axis alone (ΔDice with its 95% interval "
              "paired over the validation cases)", ["axis", "stages", "change", "ΔDice", *cost], moves),
        Table(f"Compound moves against the best single-axis move of equal memory (ΔGiB within "
              f"±{EQUAL_COST:.0%})", ["stages", "change", "ΔDice", "ΔGiB", "ΔDice per GiB",
                                       "best single-axis move", "its ΔDice", "verdict"], compound),
    ]


def scaling_summary(records: Sequence[StageRecord]) -> list[str]:
    """A few plain lines for ``scalekit study show``: per axis what it bought, the compound verdict, and
    which families would fill the axes the study cannot compare."""
    view = scaling_view(records)
    lines = []
    for axis in AXES:
        moves = view.along(axis)
        if moves:
            noisy = _noisy(moves)
            lines.append(f"scaling {AXES[axis]}: {len(moves)} move(s)"
                         f"{'' if noisy == '—' else f' ({noisy} within noise)'}, median ΔDice {_signed(_median([m.d_dice for m in moves]), 3)}, "
                         f"{_signed(_median([m.dice_per_gib for m in moves]), 4)} Dice/GiB, "
                         f"{_signed(_median([m.dice_per_tflop for m in moves]), 5)} Dice/TFLOP")
        else:
            lines.append(f"scaling: {view.missing[axis]}")
    judged = [(c, m) for c in view.compound if (m := c.margin) is not None]
    if not view.compound:
        lines.append("compound moves: none (no two completed stages differ in several axes, all upwards)")
    else:
        wins = sum(m > 0 and not holds_zero(c.margin_interval) for c, m in judged)
        ties = sum(holds_zero(c.margin_interval) for c, _ in judged)
        lines.append(f"compound moves: {wins} of {len(judged)} beat the best single-axis move of equal memory "
                     f"(±{EQUAL_COST:.0%}) by more than the noise, {ties} within noise; "
                     f"{len(view.compound) - len(judged)} had none to compare with")
    return lines

