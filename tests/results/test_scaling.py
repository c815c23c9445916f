"""Compound scaling: single-axis and compound moves between completed stages, with known deltas."""

from __future__ import annotations

import pytest

from scalekit.mednext import preset_config
from scalekit.records import StageRecord
from scalekit.results.scaling import scaling_move, scaling_summary, scaling_tables, scaling_view


def stage(sid: str, c: int, b: int, r: int, k: int, dice: float | None, gib: float, tflop: float,
          init: str = "scratch", status: str = "completed", parent: str = "", **config) -> StageRecord:
    cfg = preset_config("T", kernel_size=k, n_channels=c, block_counts=b, exp_r=r).to_dict() | config
    return StageRecord(
        stage_id=sid, family_id=f"C{c}B{b}R{r}", n_channels=c, block_counts=[b] * 9, exp_r=[r] * 9, kernel_size=k,
        init=init, status=status, parent_stage=parent, mean_dice=dice, peak_memory_bytes=int(gib * 2**30),
        cum_train_tflops=tflop, memory_method="measured", config=cfg,
    )


RECORDS = [
    stage("base", 4, 1, 2, 3, 0.70, 2.0, 10.0),
    stage("deep", 4, 2, 2, 3, 0.74, 3.0, 16.0),  # B 1->2
    stage("wide", 8, 1, 2, 3, 0.76, 6.0, 30.0),  # C 4->8
    stage("base-k5", 4, 1, 2, 5, 0.73, 2.5, 25.0, init="upkern", parent="base"),  # k 3->5
    stage("both", 8, 2, 2, 3, 0.81, 7.0, 50.0),  # B and C from base; C from deep; B from wide
    stage("base-k3c", 4, 1, 2, 3, 0.71, 2.0, 25.0, init="continue", parent="base"),  # a control: left out
    stage("failed", 4, 1, 2, 7, None, 3.0, 0.0, status="failed"),
    stage("layernorm", 4, 2, 2, 3, 0.90, 3.0, 16.0, norm_type="layer"),  # another network: no pair with base
    stage("trade", 2, 1, 4, 3, 0.65, 4.0, 20.0),  # C down, R up against every other: no move
]


def test_single_axis_moves_have_the_right_deltas() -> None:
    view = scaling_view(RECORDS)
    moves = {(m.from_id, m.to_id): m for m in view.single}
    assert set(moves) == {("base", "deep"), ("base", "wide"), ("base", "base-k5"), ("deep", "both"), ("wide", "both")}
    deep = moves[("base", "deep")]
    assert deep.axes == ("B",) and deep.change == "B 1→2"
    assert (deep.d_dice, deep.d_gib, deep.d_tflop) == pytest.approx((0.04, 1.0, 6.0))
    assert deep.dice_per_gib == pytest.approx(0.04) and deep.dice_per_tflop == pytest.approx(0.04 / 6)
    wide = moves[("base", "wide")]
    assert wide.axes == ("C",) and (wide.d_dice, wide.d_gib, wide.d_tflop) == pytest.approx((0.06, 4.0, 20.0))
    k5 = moves[("base", "base-k5")]
    assert k5.axes == ("k",) and k5.dice_per_gib == pytest.approx(0.03 / 0.5)
    assert moves[("wide", "both")].axes == ("B",) and moves[("deep", "both")].d_dice == pytest.approx(0.07)
    assert scaling_move(RECORDS[0], RECORDS[-1]) is None  # C down while R goes up: neither a move nor compound


def test_compound_moves_meet_the_best_single_axis_move_of_equal_memory() -> None:
    view = scaling_view(RECORDS)
    assert [(c.move.from_id, c.move.to_id, c.move.axes) for c in view.compound] == [("base", "both", ("B", "C"))]
    both = view.compound[0]
    assert (both.move.d_dice, both.move.d_gib) == pytest.approx((0.11, 5.0))
    # Single-axis moves of 3.75-6.25 GiB: base->wide (C, 4 GiB, +0.06) and deep->both (C, 4 GiB, +0.07).
    assert (both.best_single.from_id, both.best_single.to_id) == ("deep", "both")
    assert both.margin == pytest.approx(0.04)
    per_axis, single, compound = scaling_tables(view)
    assert [row[:3] for row in per_axis.rows] == [["depth (block counts B)", "2", "+0.045"],
                                                  ["width (channels C)", "2", "+0.065"],
                                                  ["kernel size k", "1", "+0.030"]]
    assert ["B", "base → deep", "B 1→2", "+0.0400", "+1.000", "+6.00", "+0.0400", "+0.00667"] in single.rows
    assert compound.rows[0][-1] == "compound ahead by +0.0400"


def test_axes_without_moves_say_which_family_would_give_one() -> None:
    view = scaling_view(RECORDS)
    assert set(view.missing) == {"R"}
    # The best completed stage ("layernorm", Dice 0.90) is C4 B2 R2: its expansion ratio doubled.
    assert "add a family like C4-B2x9-R4x9 (exp_r of" in view.missing["R"]
    lines = scaling_summary(RECORDS)
    assert lines[0].startswith("scaling depth (block counts B): 2 move(s), median ΔDice +0.045, +0.0450 Dice/GiB")
    assert "within noise" not in lines[0]  # no validation cases: the noise is unknown
    assert any(line.startswith("scaling: no single-axis pairs for expansion ratio R: add a family") for line in lines)
    assert lines[-1].startswith("compound moves: 1 of 1 beat the best single-axis move of equal memory")
    empty = scaling_summary([])
    assert len(empty) == 5 and "no completed stage yet" in empty[0] and "compound moves: none" in empty[-1]


def with_cases(record: StageRecord, cases: list[float]) -> StageRecord:
    record.case_dice = cases
    return record


def test_moves_say_within_noise_when_their_paired_interval_holds_zero_and_tiny_costs_give_no_ratio() -> None:
    noisy = [with_cases(stage("base", 4, 1, 2, 3, 0.70, 2.0, 10.0), [0.60, 0.80, 0.70, 0.65, 0.75]),
             with_cases(stage("deep", 4, 2, 2, 3, 0.71, 2.0005, 16.0), [0.70, 0.72, 0.66, 0.75, 0.72]),
             with_cases(stage("wide", 8, 1, 2, 3, 0.80, 6.0, 30.0), [0.70, 0.90, 0.80, 0.75, 0.85]),
             with_cases(stage("both", 8, 2, 2, 3, 0.81, 6.1, 50.0), [0.75, 0.86, 0.84, 0.72, 0.88])]
    view = scaling_view(noisy)
    moves = {(m.from_id, m.to_id): m for m in view.single}
    deep, wide = moves[("base", "deep")], moves[("base", "wide")]
    assert deep.within_noise and deep.interval[0] < 0 < deep.interval[1]
    assert not wide.within_noise and wide.interval[0] > 0  # +0.10 on every case
    assert deep.dice_per_gib is None  # 0.0005 GiB: below the memory figures' resolution
    per_axis, single, compound = scaling_tables(view)
    row = next(r for r in single.rows if r[1] == "base → deep")
    assert row[3].startswith("+0.0100 [") and row[3].endswith(", within noise") and row[6] == "—"
    assert not next(r for r in single.rows if r[1] == "base → wide")[3].endswith("within noise")
    assert [row[3] for row in per_axis.rows[:2]] == ["2 of 2", "0 of 2"]  # B: both moves; C: neither
    (both,) = view.compound
    assert both.best_single is not None and both.verdict().startswith("within noise (")
    assert "(2 of 2 within noise)" in scaling_summary(noisy)[0]


def test_moves_stay_within_a_network_kind_and_batch() -> None:
    """A ResEnc baseline scales against another ResEnc at its batch (features: C; blocks: B), never against a
    MedNeXt of the same readable columns."""
    from scalekit.networks import ResEncConfig

    def resenc(sid: str, features: int, dice: float, batch: int | None = 2) -> StageRecord:
        config = ResEncConfig(features_per_stage=(features, 2 * features), kernel_sizes=((3, 3, 3),) * 2,
                              strides=((1, 1, 1), (2, 2, 2)), n_blocks_per_stage=(1, 1), n_conv_per_stage_decoder=(1,))
        return StageRecord(stage_id=sid, family_id=sid, n_channels=features, block_counts=[1] * 9, exp_r=[2] * 9,
                           kernel_size=3, arch="resenc", batch_size=batch, status="completed", mean_dice=dice,
                           peak_memory_bytes=features * 2**30, cum_train_tflops=1.0, memory_method="measured",
                           config=config.to_dict())

    records = [*RECORDS, resenc("r4", 4, 0.60), resenc("r8", 8, 0.66), resenc("r8-b7", 8, 0.67, batch=7)]
    moves = {(m.from_id, m.to_id): m for m in scaling_view(records).single}
    assert moves[("r4", "r8")].axes == ("C",) and moves[("r4", "r8")].d_dice == pytest.approx(0.06)
    assert not [pair for pair in moves if ("r4" in pair or "r8" in pair) and not set(pair) <= {"r4", "r8"}]
    assert not [pair for pair in moves if "r8-b7" in pair], "another batch is another training, not a move"
