"""Promotion at a rung: decided by measured Dice within the noise, per memory budget, never by arrival order."""

from __future__ import annotations

import itertools
import random

import pytest

from scalekit.results.fidelity import Contender, beats, difference, no_signal
from scalekit.study.engine.promotion import budget_class, budgets, decide


PATTERNS = ((-1.0, 0.0, 1.0), (1.0, -1.0, 0.0), (0.0, 1.0, -1.0))


def stage(name: str, dice: float, memory: float = 1.0, spread: float = 0.01, waiting: bool = True) -> Contender:
    """A stage scored on three validation cases around ``dice`` (their spread sets the noise; stages differ in
    which case is their best, so a paired difference has noise too)."""
    pattern = PATTERNS[sum(map(ord, name)) % 3]
    return Contender(name, dice, tuple(dice + spread * p for p in pattern), memory, waiting)


def outcome(rung: list[Contender], eta: int = 2, complete: bool = False, limits=(16.0, 24.0)):
    decision = decide(rung, len(rung), eta, 2, limits, complete)
    return decision.promote, sorted(decision.lost), decision.no_signal


def test_the_demo_rung_promotes_the_better_family_in_either_order() -> None:
    """The demo's rung 2: tiny k3 0.0011 (0.106 GiB) against wide k3 0.2281 (0.148 GiB), quota one, both
    within the study's 0.25 GiB budget: wide goes on whichever arrived first, and tiny is told why."""
    tiny = Contender("f2568719f-k3", 0.0011, (0.0, 0.0021, 0.0012), 0.1057, label="tiny k3")
    wide = Contender("fbd5ffc1b-k3", 0.2281, (0.19, 0.26, 0.234), 0.1478, label="wide k3")
    limits = budgets(0.25)
    assert limits == (0.25,) and budget_class(tiny.memory_gb, limits) == budget_class(wide.memory_gb, limits) == 0
    for rung in ([tiny, wide], [wide, tiny]):
        decision = decide(rung, 2, 2, 2, limits, complete=True)
        assert decision.promote == ("fbd5ffc1b-k3",)
        reason = decision.lost["f2568719f-k3"]
        assert reason.startswith("not promoted at rung 2 epochs: wide k3 (Dice 0.228 [0.190, 0.260]) went on; "
                                 "this stage 0.001 [0.000, 0.002], +0.227 ± ")


RUNG = [stage("a", 0.62, 20.0), stage("b", 0.60, 20.0, spread=0.05), stage("c", 0.45, 10.0),
        stage("d", 0.30, 12.0), stage("e", 0.30, 12.0), stage("f", 0.05, 40.0)]


@pytest.mark.parametrize("complete", [False, True])
def test_every_permutation_of_a_rung_promotes_the_same_stages(complete: bool) -> None:
    """Ties (a-b within noise, d-e equal), two budget classes and a stage too large for both: all 720 orders
    give one decision."""
    seen = {repr(outcome(list(order), eta=3, complete=complete)) for order in itertools.permutations(RUNG)}
    assert len(seen) == 1
    promote, lost, _ = outcome(RUNG, eta=3, complete=complete)
    assert promote == ("a", "b", "c"), "c alone fits a 16 GB GPU; b is within noise of a"
    assert lost == ["d", "e", "f"]


def test_a_tie_within_noise_is_kept_whole_not_cut_by_order() -> None:
    """Quota one, two stages 0.01 apart with a noise of 0.03: both go on (the decision waits for the next
    rung), in every order; the clearly worse one stops."""
    rung = [stage("x", 0.50, spread=0.05), stage("y", 0.51, spread=0.05), stage("z", 0.10)]
    assert not beats(rung[1], rung[0]) and not beats(rung[0], rung[1])
    for order in itertools.permutations(rung):
        promote, lost, _ = outcome(list(order), eta=3, complete=True)
        assert promote == ("x", "y") and lost == ["z"]


def test_a_rung_without_signal_promotes_every_stage_and_says_why() -> None:
    zeros = [stage("p", 0.001, spread=0.001), stage("q", 0.004, spread=0.001), stage("r", 0.0, spread=0.0)]
    promote, lost, why = outcome(zeros, eta=3, complete=True)
    assert promote == ("p", "q", "r") and lost == [] and "below 0.01" in why
    close = [stage("p", 0.40, spread=0.1), stage("q", 0.42, spread=0.1), stage("r", 0.41, spread=0.1)]
    promote, lost, why = outcome(close, eta=3, complete=True)
    assert promote == ("p", "q", "r") and "standard error" in why
    assert no_signal([stage("p", 0.4), stage("q", 0.6)]) == ""


def test_memory_decides_which_budgets_a_stage_serves_and_dice_decides_within() -> None:
    """a is best but needs 20 GB; b fits a 16 GB GPU and beats c there: with two places a and b go on, never c
    over b; with one place the best Dice goes on."""
    rung = [stage("a", 0.80, 20.0), stage("b", 0.60, 10.0), stage("c", 0.50, 12.0), stage("d", 0.20, 30.0)]
    assert outcome(rung, eta=2, complete=True)[0] == ("a", "b")
    assert outcome(rung, eta=4, complete=True)[0] == ("a",)
    assert budgets(None) == (16.0, 24.0, 40.0, 80.0) and budgets(30.0) == (16.0, 24.0, 30.0)


def test_no_stage_goes_on_over_one_that_beats_it_within_every_budget_it_serves() -> None:
    """The promotion property, on random rungs: a promoted stage is never beaten by more than the noise by a
    stage it outranked that fits the same or a smaller budget."""
    rng = random.Random(0)
    limits = (16.0, 24.0)
    for _ in range(300):
        rung = [stage(f"s{i}", round(rng.uniform(0, 0.9), 3), rng.choice([8.0, 20.0, 30.0]),
                      spread=rng.choice([0.0, 0.01, 0.08])) for i in range(rng.randint(2, 7))]
        decision = decide(rung, len(rung), rng.choice([2, 3]), 2, limits, complete=rng.random() < 0.5)
        promoted = [c for c in rung if c.stage_id in decision.promote]
        ranked_out = [c for c in rung if c.stage_id in decision.lost]
        for s in promoted:
            for t in ranked_out:
                if budget_class(t.memory_gb, limits) <= budget_class(s.memory_gb, limits):
                    assert not beats(t, s), (s, t, rung)


def test_a_quota_of_zero_decides_nothing_yet() -> None:
    assert decide([stage("a", 0.5)], 1, 3, 1, (16.0,), complete=False).promote == ()
    assert decide([stage("a", 0.5)], 1, 3, 1, (16.0,), complete=True).promote == ("a",)
    assert decide([stage("a", 0.5, waiting=False), stage("b", 0.1)], 2, 2, 1, (), complete=True).promote == ()


def test_paired_difference_over_the_same_cases() -> None:
    """Two stages that move together case by case differ with little noise, though each spreads widely."""
    a = Contender("a", 0.5, (0.2, 0.5, 0.8))
    b = Contender("b", 0.45, (0.15, 0.45, 0.75))
    gap = difference(a, b)
    assert gap.paired and gap.value == pytest.approx(0.05) and gap.error == pytest.approx(0.0, abs=1e-12)
    assert gap.significant
    unpaired = difference(a, Contender("c", 0.45, (0.15, 0.75)))
    assert not unpaired.paired and not unpaired.significant
