"""Chain planning: which stage of which family trains next, how far, and what an ended stage means for its chain.

Pure logic over the results table, free of Ray and Optuna, so it can be tested and reasoned about alone.
A family's chain is its stages in kernel order (3 -> 5 -> 7), with a continuation control beside each UpKern
step when the study asks for them. When a family is opened every stage is profiled: a stage that breaks a
constraint is ``infeasible`` and never trains. A stage starts once its parent completed (and the parent's
control, if any, ended); the study's :class:`~scalekit.study.engine.schedule.Schedule` says how far it trains (a
rung, or the full budget) and when it goes on; an UpKern step and its control train to the same rungs. The
chain ends (later stages ``stopped`` with the reason) when a stage is infeasible, fails, is ranked out at a
rung, or does not beat its parent's mean Dice by the saturation margin.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalekit.networks import NetworkConfig
from scalekit.records import ResultsTable, StageRecord, Status, make_stage_id, training_spent
from scalekit.space import ChainFamily, SearchSpace

from .families import Constraints, ProfileFn, Templates, plan_family, position, templates_of
from scalekit.results.fidelity import beats, bootstrap_interval, contender_at, difference

from .promotion import budgets
from .schedule import OPEN, Lane, RungDecision, Schedule, decide_rungs

log = logging.getLogger(__name__)

MAX_RETRIES = 3
"""How often one run hands a stage out again after its trial was lost with its node."""


@dataclass(frozen=True)
class ChainRules:
    """How chains go on: the saturation margin, the controls, the schedule, and what a stage's training costs.

    ``iterations_per_epoch`` and ``devices_per_trial`` turn epochs and wall time into iterations, training
    FLOPs and device-hours.
    """

    min_improvement: float | None = 0.0
    controls: bool = False
    schedule: Schedule = field(default_factory=Schedule)
    iterations_per_epoch: int = 1
    devices_per_trial: float = 1.0
    budget: dict[str, float] = field(default_factory=dict)
    """Limits on :meth:`ChainPlanner.spent` (``epochs``, ``device_hours``): no new work starts past one."""


class ChainPlanner:
    """Opens families, hands out stages with the epochs to train to, and records how they ended."""

    def __init__(
        self,
        space: SearchSpace,
        table: ResultsTable,
        templates: NetworkConfig | Templates,
        profile: ProfileFn,
        constraints: Constraints,
        stages_dir: Path,
        rules: ChainRules | None = None,
        checkpointing: bool | None = None,
    ) -> None:
        self.space = space
        self.table = table
        self.templates = templates_of(templates)
        self.profile = profile
        self.constraints = constraints
        self.stages_dir = stages_dir
        self.rules = rules or ChainRules()
        self.checkpointing = checkpointing
        self._running: set[str] = set()
        self._retries: dict[str, int] = defaultdict(int)
        self.all_open = False
        """Set by the search once no family is left to open (a synchronous rung may decide then)."""
        self.notes: dict[tuple[int, int], str] = {}
        """What each rung that decided nothing said (by chain position and rung), as logged."""
        self._halted: set[str] = set()

    @property
    def schedule(self) -> Schedule:
        return self.rules.schedule

    # ---- families --------------------------------------------------------------------------------------------

    def family_ids(self) -> list[str]:
        """Families with rows in the table, in first-seen order."""
        return list(dict.fromkeys(r.family_id for r in self.table.records()))

    def stages(self, family_id: str) -> list[StageRecord]:
        """A family's stages in chain order (each control before the UpKern step it stands beside)."""
        return [r for r in self.table.records() if r.family_id == family_id]

    @staticmethod
    def stage_of(family_id: str, kernel: int) -> str:
        return make_stage_id(family_id, kernel)

    def open_family(self, family: ChainFamily) -> list[StageRecord]:
        """Profile every stage of a new family and write its rows (pending, or infeasible with the reason)."""
        kernels = self.space.chain(family.family_id)
        if self.stage_of(family.family_id, kernels[0]) in self.table:
            return self.stages(family.family_id)
        records = plan_family(family, kernels, self.templates, self.profile, self.constraints,
                              self.checkpointing, self.rules.controls)
        for record in records:
            self.table.upsert(record)
        log.info("opened family %s (%s): %s", family.family_id, family.name, [r.status for r in records])
        return records

    def family_done(self, family_id: str) -> bool:
        return all(r.status not in OPEN for r in self.stages(family_id))

    def interrupt(self, stage_ids: Sequence[str] | None = None) -> list[str]:
        """Stages handed out but not finished (the run was stopped) go back to where they were; default: all."""
        stopped = sorted(self._running if stage_ids is None else set(stage_ids) & self._running)
        for stage_id in stopped:
            self._resume_later(stage_id)
        return stopped

    def retry(self, stage_id: str, reason: str) -> bool:
        """A stage whose trial was lost with its node (not by its own error) waits again and resumes from its
        last checkpoint, up to :data:`MAX_RETRIES` times per run; False, with nothing changed, once spent."""
        if self._retries[stage_id] >= MAX_RETRIES:
            return False
        self._retries[stage_id] += 1
        self._resume_later(stage_id, f"{reason}; resumes from its last checkpoint (retry {self._retries[stage_id]} "
                                     f"of {MAX_RETRIES})")
        return True

    def _resume_later(self, stage_id: str, reason: str = "interrupted; resumes from its last checkpoint") -> None:
        """An interrupted stage waits again (``pending``, or ``paused`` at the rung it last reached) and resumes
        from its last checkpoint when handed out again."""
        self._running.discard(stage_id)
        record = self.table[stage_id]
        status: Status = "paused" if record.epochs and str(record.epochs) in record.dice_curve else "pending"
        self.table.update(stage_id, status=status, reason=reason)

    def best_stage(self, family_id: str) -> StageRecord:
        """The family's completed stage with the highest mean Dice, else its stage scored at the highest rung,
        else its first stage (for its profile)."""
        stages = self.stages(family_id)
        if not stages:
            raise KeyError(f"family {family_id} has no stages in {self.table.path}")
        valid = [r for r in stages if r.is_valid]
        if valid:
            return max(valid, key=lambda r: r.mean_dice or 0.0)
        scored = [r for r in stages if r.mean_dice is not None and r.status not in ("failed", "infeasible")]
        return max(scored, key=lambda r: (r.epochs or 0, r.mean_dice or 0.0)) if scored else stages[0]

    # ---- stages ----------------------------------------------------------------------------------------------

    @property
    def study_dir(self) -> Path:
        return self.table.path.parent

    def recover(self) -> dict[str, list[str]]:
        """Bring the table back in line with the disk after a crash, before anything is handed out.

        Stages left ``running`` wait again (they resume from their last checkpoint); ``completed`` or
        ``paused`` stages whose weights are gone (a deleted stage folder) go back to ``pending`` and retrain.
        Returns the stage ids of each kind (``interrupted``, ``missing``).
        """
        found: dict[str, list[str]] = {"interrupted": [], "missing": []}
        for record in self.table.records():
            if record.status == "running":
                found["interrupted"].append(record.stage_id)
                self._resume_later(record.stage_id)
            elif record.status in ("completed", "paused"):
                path = record.checkpoint_path(self.study_dir)
                if path is None or not path.is_file():
                    found["missing"].append(record.stage_id)
                    self.table.update(record.stage_id, status="pending", mean_dice=None, mean_nsd=None,
                                      per_class_dice=[], per_class_nsd=[], checkpoint="", epochs=None,
                                      dice_curve={}, case_dice=[], case_curve={}, dice_interval=[], target_epochs=None,
                                      reason=f"retrains: its weights {path} are missing")
        return found

    def next_work(self, final: bool = False) -> tuple[str, int] | None:
        """The next stage to train and the epochs to train it to, not handed out yet: a promotion due at a
        rung (with ``final``: every rung decides as a complete one, see :mod:`~scalekit.study.engine.schedule`),
        else a stage whose parent completed, else a control whose UpKern step went further than it."""
        if not self.budget_left():
            return None
        for stage_id, target in self.promotions(final):
            if stage_id not in self._running:
                return stage_id, target
        for record in self.table.records():
            if record.stage_id in self._running or record.status not in ("pending", "paused"):
                continue
            parent = self.table.get(record.parent_stage) if record.parent_stage else None
            if parent is not None and (parent.status != "completed" or not self._settled(parent)):
                continue
            partner = self.partner(record)
            lead = partner.target_epochs if partner is not None else None
            if lead and lead > (record.epochs or 0) and (record.is_control or record.status == "paused"):
                return record.stage_id, lead  # the lane's two stages train to the same rungs, leader first
            if not record.is_control and record.status == "pending":
                return record.stage_id, self.schedule.first
        return None

    def partner(self, record: StageRecord) -> StageRecord | None:
        """The other stage of a lane: an UpKern step's continuation control, or a control's step."""
        if record.is_control:
            return self.table.get(self._step_of(record))
        if not record.parent_stage or record.init != "upkern":
            return None
        parent = self.table.get(record.parent_stage)
        if parent is None:
            return None
        return self.table.get(make_stage_id(parent.family_id, parent.kernel_size, control=True))

    def _settled(self, record: StageRecord) -> bool:
        """Whether a completed stage's lane has ended (its control, if any, is no longer open), so the chain
        may grow from it: the duel at the full budget decides that."""
        partner = self.partner(record)
        return partner is None or partner.status not in OPEN

    def any_running(self) -> bool:
        return bool(self._running)

    def _step_of(self, control: StageRecord) -> str:
        """The UpKern step a control stands beside: the stage after its parent in the chain."""
        kernels = list(self.space.chain(control.family_id))
        return self.stage_of(control.family_id, kernels[kernels.index(control.kernel_size) + 1])

    def lanes(self) -> dict[int, list[Lane]]:
        """Each chain position's families: the step (or first stage) and the control beside it."""
        stages: dict[tuple[int, str], dict[str, StageRecord]] = defaultdict(dict)
        for record in self.table.records():
            role = "control" if record.is_control else "step"
            stages[position(record, self.space.chain(record.family_id)), record.family_id][role] = record
        lanes: dict[int, list[Lane]] = defaultdict(list)
        for (here, _), roles in sorted(stages.items()):
            lanes[here].append(Lane(**roles))
        return lanes

    def decisions(self, final: bool = False) -> list[RungDecision]:
        """Every rung's decision now (see :func:`~scalekit.study.engine.schedule.decide_rungs`), per the study's
        memory budgets."""
        return decide_rungs(self.schedule, self.lanes(), budgets(self.constraints.max_memory_gb), self.all_open,
                            final)

    def promotions(self, final: bool = False) -> list[tuple[str, int]]:
        """Promotions due now, as (stage id, rung to train to). A complete rung's decision is applied first:
        the stages it ranked out stop with the reason (and the rest of their chains), and a rung that decided
        nothing is noted once."""
        due = []
        for rung in self.decisions(final):
            if rung.decision.no_signal and (rung.position, rung.rung) not in self.notes:
                note = (f"rung {rung.rung} epochs, chain position {rung.position + 1}: no signal "
                        f"({rung.decision.no_signal}); every stage goes on. The rung is too short: raise "
                        "search.min_epochs")
                self.notes[rung.position, rung.rung] = note
                log.warning(note)
            if rung.complete:
                for stage_id, reason in sorted(rung.decision.lost.items()):
                    self._rank_out(stage_id, reason)
            due += [(stage_id, rung.after) for stage_id in rung.decision.promote]
        return due

    def take_halted(self) -> set[str]:
        """The families a complete rung halted a stage of since the last call."""
        halted, self._halted = self._halted, set()
        return halted

    def _rank_out(self, stage_id: str, reason: str) -> None:
        """A stage a complete rung ranked out stops (if it still waits), and so do the other stage of its lane
        and the later stages of its chain."""
        record = self.table[stage_id]
        if record.status not in ("pending", "paused") or stage_id in self._running:
            return
        at = f" at {record.epochs} of {self.schedule.max_epochs} epochs" if record.epochs else ""
        self.table.update(stage_id, status="stopped", reason=f"halted{at}: {reason}")
        self._halted.add(record.family_id)
        log.info("%s halted%s: %s", stage_id, at, reason)
        partner = self.partner(record)
        if partner is not None and partner.status in ("pending", "paused") and partner.stage_id not in self._running:
            self.table.update(partner.stage_id, status="stopped",
                              reason=f"halted: {record.name}, which led its lane, was not promoted")
        step = partner if record.is_control and partner is not None else record
        self._end_chain(step, f"chain ended: {record.name} was not promoted")

    def stage_dir(self, stage_id: str) -> Path:
        return self.stages_dir / stage_id

    def start(self, stage_id: str, target_epochs: int | None = None) -> StageRecord:
        """Hand a stage out to train to ``target_epochs`` (default: the full budget)."""
        self._running.add(stage_id)
        target = target_epochs or self.schedule.max_epochs
        return self.table.update(stage_id, status="running", reason="", target_epochs=target)

    def parent_checkpoint(self, record: StageRecord) -> Path | None:
        """The final weights of a stage's parent (its UpKern or continuation source), as a path that exists."""
        if not record.parent_stage:
            return None
        return self.table[record.parent_stage].checkpoint_path(self.study_dir)

    # ---- compute ---------------------------------------------------------------------------------------------

    def spent(self) -> dict[str, float]:
        """Training spent by the study so far: epochs, device-hours and training TFLOPs over every stage."""
        return training_spent(self.table.records())

    def budget_left(self) -> bool:
        """Whether the study's compute budget (``search.budget_*``) allows new work."""
        spent = self.spent()
        return all(spent[key] < limit for key, limit in self.rules.budget.items())

    def _accounting(self, record: StageRecord, epochs: int | None, wall_time_s: float | None) -> dict[str, Any]:
        """A stage's training compute, own and since scratch (its parent's cumulative figures plus its own)."""
        if epochs is None:
            return {}
        own = epochs * self.rules.iterations_per_epoch * (record.gflops_train or 0.0) / 1000.0
        parent = self.table.get(record.parent_stage) if record.parent_stage else None
        before = (parent.cum_epochs or 0, parent.cum_train_tflops or 0.0) if parent is not None else (0, 0.0)
        out: dict[str, Any] = {
            "train_tflops": round(own, 4), "cum_epochs": before[0] + epochs,
            "cum_iterations": (before[0] + epochs) * self.rules.iterations_per_epoch,
            "cum_train_tflops": round(before[1] + own, 4),
        }
        if wall_time_s is not None:
            out["device_hours"] = round(wall_time_s / 3600.0 * self.rules.devices_per_trial, 6)
        return out

    # ---- endings ---------------------------------------------------------------------------------------------

    def finish(self, stage_id: str, status: Status, reason: str = "", **measured: Any) -> StageRecord:
        """Record how a stage's session ended (completed / failed / infeasible). A ``completed`` session short of
        the full budget leaves the stage ``paused`` at its rung; a full one may end the chain (saturation)."""
        self._running.discard(stage_id)
        if measured.get("checkpoint") and Path(measured["checkpoint"]).is_absolute():
            # Stored relative to the study directory, so that the directory can move.
            measured["checkpoint"] = os.path.relpath(measured["checkpoint"], self.study_dir)
        record = self.table[stage_id]
        measured.update(self._accounting(record, measured.get("epochs"), measured.get("wall_time_s")))
        interval = bootstrap_interval(measured.get("case_dice", []))
        if interval is not None:
            measured["dice_interval"] = [round(v, 5) for v in interval]
        if status == "completed":
            violation = self.constraints.violation(dataclasses.replace(record, **measured))
            if violation:
                status, reason = "infeasible", f"measured: {violation}"
            elif measured.get("epochs") is not None and measured["epochs"] < self.schedule.max_epochs:
                status = "paused"
        record = self.table.update(stage_id, status=status, reason=reason, **measured)
        end = ""
        if status not in ("completed", "paused"):
            end = f"chain ended at {stage_id} ({status})"
        elif status == "completed" and self.rules.min_improvement is not None and record.parent_stage \
                and not record.is_control:
            parent = self.table[record.parent_stage]
            gain = (record.mean_dice or 0.0) - (parent.mean_dice or 0.0)
            if gain < self.rules.min_improvement:
                end = (
                    f"chain saturated at {stage_id}: mean Dice {gain:+.4f} over its parent, "
                    f"below the margin {self.rules.min_improvement:g}"
                )
        if end and not record.is_control:
            self._end_chain(record, end)
        elif status == "completed":
            self._log_duel(record)
        return record

    def _log_duel(self, record: StageRecord) -> None:
        """Once both stages of a lane completed the full budget, log which paid more for this data. The chain
        grows either way: the next continuation trains the larger kernel on, and on every recorded space a
        family's best stage was its last continuation."""
        partner = self.partner(record)
        if partner is None or partner.status != "completed":
            return
        control, step = (record, partner) if record.is_control else (partner, record)
        a, b = contender_at(control, self.schedule.max_epochs), contender_at(step, self.schedule.max_epochs)
        if a is not None and b is not None and beats(a, b):
            log.info("%s beat %s at the full budget (%.3f vs %.3f, %s): for this data, training k%d longer paid "
                     "more than k%d", control.name, step.name, a.dice, b.dice, difference(a, b).describe(),
                     control.kernel_size, step.kernel_size)

    def _end_chain(self, record: StageRecord, reason: str) -> None:
        kernels = self.space.chain(record.family_id)
        here = position(record, kernels)
        for later in self.stages(record.family_id):
            if position(later, kernels) > here and later.status in ("pending", "paused"):
                self.table.update(later.stage_id, status="stopped", reason=reason)

    def halt(self, reason: str) -> list[str]:
        """The search ends: every stage still waiting is ``stopped`` with ``reason`` (a paused stage keeps the
        Dice of the rung it reached). Returns their ids."""
        halted = []
        for record in self.table.records():
            if record.status in ("pending", "paused") and record.stage_id not in self._running:
                at = f" at {record.epochs} of {self.schedule.max_epochs} epochs" if record.status == "paused" else ""
                self.table.update(record.stage_id, status="stopped", reason=f"halted{at}: {reason}")
                halted.append(record.stage_id)
        return halted


def objective_values(record: StageRecord, metrics: Sequence[str]) -> list[float]:
    """The objective metrics of a stage (missing scores of an untrained stage count as 0)."""
    values = []
    for metric in metrics:
        value = getattr(record, metric)
        values.append(float(value) if value is not None else 0.0)
    return values
