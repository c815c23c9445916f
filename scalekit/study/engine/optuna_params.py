"""A family as an Optuna trial: the parameters a sampler draws, those it does not, and the stages as user
attributes, laid out for optuna-dashboard.

A family's *point* is what a sampler draws, define-by-run: ``source`` (``listed`` or ``scaling``) where a space
has both, then ``label`` for a listed family (a preset or an explicit family; its choices are the names, the
smallest network first) or ``depth``, ``expansion`` and ``n_channels`` for a point of a compound-scaling range.
Its *descriptors* follow: ``n_channels`` (C), ``blocks`` (the total block count) and ``exp_r`` (the mean
expansion ratio), each with one distribution across the study, as Optuna requires of a name: a numeric range
over the space, except that ``n_channels`` keeps the scaling axis's categorical where the space has one (a
listed family whose width is not among its values goes without it). No sampler draws a descriptor:
:class:`FamilySampler` answers each with the family's own value, and a queued family is queued with all of its
parameters. A study created before descriptors (without :data:`LAYOUT_ATTR`) keeps its own parameters,
``family_index`` into the listed families in the space's order, the scaling axes and ``source``, and resumes
as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from scalekit.records import StageRecord
from scalekit.space import FAMILY_INDEX, SOURCE, Family, SearchSpace

LABEL = "label"
LAYOUT_ATTR = "family_params"
"""The study attribute of a study whose trials carry descriptors; a study without it predates them."""
LAYOUT = "source, label or depth/expansion/n_channels (drawn); n_channels, blocks, exp_r (the family's own)"
STAGE_ATTR = "stage."


def _numeric(values: Sequence[float]) -> BaseDistribution:
    if all(isinstance(value, int) for value in values):
        return IntDistribution(int(min(values)), int(max(values)))
    return FloatDistribution(min(values), max(values))


def _suggest(trial: optuna.trial.Trial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high)
    assert isinstance(distribution, FloatDistribution)
    return trial.suggest_float(name, distribution.low, distribution.high)


class FamilyParams:
    """The parameters of the families of one space in one study (``described``: with descriptors)."""

    def __init__(self, space: SearchSpace, described: bool) -> None:
        self.space = space
        self._key = LABEL if described else FAMILY_INDEX
        self.listed: dict[Any, Family] = space.labels() if described else dict(enumerate(space.listed))
        self._names = {family.family_id: name for name, family in self.listed.items()}
        self.point_dists = {axis: CategoricalDistribution(values) for axis, values in space.axis_choices().items()
                            if axis != FAMILY_INDEX}
        if space.listed:
            self.point_dists[self._key] = CategoricalDistribution(list(self.listed))
        self.descriptor_dists = {
            name: self.point_dists.get(name) or _numeric([f.descriptors[name] for f in space.families])
            for name in (space.families[0].descriptors if described else ())
        }
        self.fixed = {name for f in space.families for name in self.descriptors(f) if name not in self.point(f)}
        """The names that some family holds as a descriptor: never sampled."""

    @classmethod
    def of(cls, study: optuna.Study, space: SearchSpace) -> FamilyParams:
        return cls(space, LAYOUT_ATTR in study.user_attrs)

    def point(self, family: Family) -> dict[str, Any]:
        """The family's point (``source`` first where the space has it)."""
        point = dict(family.axes) if family.axes else {self._key: self._names[family.family_id]}
        if SOURCE in self.point_dists:
            point = {SOURCE: "scaling" if family.axes else "listed", **point}
        return point

    def descriptors(self, family: Family) -> dict[str, Any]:
        """The family's descriptors as this study records them."""
        return {name: value for name, value in family.descriptors.items() if name in self.descriptor_dists
                and (not isinstance(dist := self.descriptor_dists[name], CategoricalDistribution)
                     or value in dist.choices)}

    def params(self, family: Family) -> dict[str, Any]:
        """All the parameters of a family, as it is queued."""
        return {**self.descriptors(family), **self.point(family)}

    def _point_names(self, source: str | None) -> list[str]:
        return [self._key if axis == FAMILY_INDEX else axis for axis in self.space.point_axes(source)]

    def _at(self, point: Mapping[str, Any]) -> Family:
        return self.listed[point[self._key]] if self._key in point else self.space.family_at(dict(point))

    def family_of(self, params: Mapping[str, Any]) -> Family | None:
        """The family whose point ``params`` hold; None while they hold only part of one."""
        if SOURCE in self.point_dists and SOURCE not in params:
            return None
        names = self._point_names(params.get(SOURCE))
        return self._at(params) if all(name in params for name in names) else None

    def suggest(self, trial: optuna.trial.Trial) -> Family:
        """Draw a family: its point axis by axis (the scaling axes only for a scaling point), then its
        descriptors (answered by :class:`FamilySampler`); a queued trial gets the values it was queued with."""
        point: dict[str, Any] = {}
        if SOURCE in self.point_dists:
            point[SOURCE] = _suggest(trial, SOURCE, self.point_dists[SOURCE])
        for name in self._point_names(point.get(SOURCE)):
            point[name] = _suggest(trial, name, self.point_dists[name])
        family = self._at(point)
        for name in self.descriptors(family):
            if name not in point:
                _suggest(trial, name, self.descriptor_dists[name])
        return family


def suggest_family(trial: optuna.trial.Trial, space: SearchSpace) -> Family:
    """Draw a family on a trial of a study opened by :func:`~scalekit.study.engine.search.open_optuna_study`."""
    return FamilyParams.of(trial.study, space).suggest(trial)


class FamilySampler(optuna.samplers.BaseSampler):
    """The study's own sampler for a family's point; a descriptor is answered with the family's value and
    kept out of the relative search space, as Optuna's ``PartialFixedSampler`` does for fixed parameters."""

    def __init__(self, base: optuna.samplers.BaseSampler, params: FamilyParams) -> None:
        self.base = base
        self.params = params

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        space = self.base.infer_relative_search_space(study, trial)
        return {name: dist for name, dist in space.items() if name not in self.params.fixed}

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        family = self.params.family_of(trial.params)
        if family is None:
            return self.base.sample_independent(study, trial, param_name, param_distribution)
        return self.params.descriptors(family)[param_name]

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState,
                    values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)


def stage_attrs(record: StageRecord) -> dict:
    """A stage as one entry of its family's trial (optuna-dashboard shows it as JSON)."""
    return {"stage_id": record.stage_id, "status": record.status, "init": record.init,
            "kernel": record.kernel_size, "mean_dice": record.mean_dice, "epochs": record.epochs,
            "rung_dice": {epochs: round(dice, 4) for epochs, dice in record.dice_curve.items()},
            "peak_memory_gb": record.peak_memory_gb, "gflops_train": record.gflops_train,
            "cum_train_tflops": record.cum_train_tflops, "reason": record.reason}


def rung_text(curve: Mapping[str, float]) -> str:
    """A Dice curve as short text, ``epochs:dice`` at each rung: ``1:0.412 3:0.530``."""
    return " ".join(f"{epochs}:{dice:.3f}" for epochs, dice in sorted(curve.items(), key=lambda item: int(item[0])))


def shown_stage(record: StageRecord) -> dict[str, Any]:
    """A stage's user attributes: the whole stage (``stage.k5``) and, as flat scalars that optuna-dashboard's
    trial table shows as columns, ``k5.status`` and, once known, ``k5.mean_dice``, ``k5.epochs`` and
    ``k5.rung_dice`` (a value is never null there, so that the dashboard can sort a column by its numbers)."""
    suffix = record.stage_id.rsplit("-", 1)[1]
    flat = {"status": record.status, "epochs": record.epochs, "rung_dice": rung_text(record.dice_curve),
            "mean_dice": None if record.mean_dice is None else round(record.mean_dice, 4)}
    return {STAGE_ATTR + suffix: stage_attrs(record),
            **{f"{suffix}.{key}": value for key, value in flat.items() if value not in (None, "")}}
