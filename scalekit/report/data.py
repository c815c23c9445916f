"""The report's data: a study directory (complete or still running) read into plain records, the panels with
their points and 2-D Pareto fronts, UpKern steps, hover texts, the answer's stage, the search timeline and the
per-class scores, and the layout of every scatter figure. No plotting here (:mod:`scalekit.report.output` draws).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from scalekit.results.answer import kind_label, study_answer
from scalekit.report.key import LABELS, family_colours
from scalekit.report.layout import LinkSpec, PanelLayout, PointSpec, panel_layout, zoom_layout
from scalekit.results.pareto import StudyGoals, pareto_front, study_front
from scalekit.report.perclass import ClassScores, class_scores
from scalekit.report.geometry import Style
from scalekit.records import DEFAULT_ARCH, Objective, StageRecord, StudyDir
from scalekit.results.scaling import ScalingView, scaling_view
from scalekit.results.selection import rule_choices
from scalekit.studyfile import read_saved_study
from scalekit.results.tables import fmt
from scalekit.report.timeline import Timeline, build_timeline

PANELS = (
    ("dice_vs_memory", "peak_memory_gb", "mean_dice", "max_memory_gb"),
    ("dice_vs_gflops", "gflops_train", "mean_dice", "max_gflops"),
    ("dice_vs_params", "params", "mean_dice", None),
    ("nsd_vs_memory", "peak_memory_gb", "mean_nsd", "max_memory_gb"),
)
"""(name, x metric, y metric, budget attribute of StudyGoals): one figure each; x minimised, y maximised."""


@dataclass(frozen=True)
class Panel:
    """One scatter figure: the valid stages with both values and their own 2-D Pareto front."""

    name: str
    x_metric: str
    y_metric: str
    points: list[tuple[str, float, float]]
    """(stage id, x, y) of every valid stage that has both values."""
    front_ids: list[str]
    """Stage ids on the (min x, max y) front, ordered by x: the step line is drawn through them."""
    budget: float | None = None
    partial: list[tuple[str, float, float]] = field(default_factory=list)
    """(stage id, x, y) of stages scored at a rung only (halted there, or waiting to be promoted): drawn hollow."""


@dataclass(frozen=True)
class UpKernStep:
    """An UpKern-initialised stage against its parent: the gain of one k -> k' step of a chain."""

    stage_id: str
    parent_id: str
    family: str
    from_kernel: int
    to_kernel: int
    dice_delta: float | None
    memory_ratio: float | None
    flops_ratio: float | None


@dataclass
class ReportData:
    """Everything the report shows, as plain values (tests check these, not pixels)."""

    study_dir: Path
    records: list[StageRecord]
    goals: StudyGoals
    front_ids: frozenset[str]
    """Stages on the Pareto front of the study's own objectives (any number of them)."""
    panels: list[Panel]
    steps: list[UpKernStep]
    hover: dict[str, str]
    choices: dict[str, str] = field(default_factory=dict)
    """Rule -> stage id for ``best`` and ``knee`` (absent while no stage is valid)."""
    scaling: ScalingView = field(default_factory=lambda: ScalingView([], [], {}))
    """What each scaling axis bought (:mod:`scalekit.results.scaling`)."""
    answer_id: str | None = None
    """The stage the answer names for the study's budget (:func:`scalekit.results.answer.study_answer`), if any."""
    answer_lines: list[str] = field(default_factory=list)
    timeline: Timeline = field(default_factory=lambda: build_timeline([], 1))
    class_dice: ClassScores = field(default_factory=lambda: class_scores([], None))
    class_nsd: ClassScores = field(default_factory=lambda: class_scores([], None, metric="nsd"))


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def hover_text(record: StageRecord) -> str:
    """Plotly hover (``<br>`` lines): the stage, its measurements and its whole MedNeXt configuration."""
    lines = [
        f"<b>{html.escape(record.stage_id)}</b> {html.escape(record.family_label or record.family_id)}",
        f"status: {record.status}" + (f" ({html.escape(record.reason)})" if record.reason else ""),
        f"init: {record.init}" + (f" from {html.escape(record.parent_stage)}" if record.parent_stage else ""),
        f"mean Dice {fmt(record.mean_dice)}, NSD {fmt(record.mean_nsd)}"
        + (f" at a rung of {record.epochs} epochs" if record.status in ("stopped", "paused") and record.epochs else ""),
        f"peak memory {fmt(record.peak_memory_gb, 3)} GiB ({record.memory_method or 'n/a'})",
        f"GFLOPs train {fmt(record.gflops_train, 1)}, params {fmt(record.params)}",
    ]
    lines += [f"{key}: {html.escape(str(value))}" for key, value in record.config.items()]
    return "<br>".join(lines)


def _panel(name: str, x_metric: str, y_metric: str, budget: float | None, records: list[StageRecord]) -> Panel:
    objectives = (Objective(x_metric, "minimize"), Objective(y_metric, "maximize"))
    measured = [r for r in records if all(o.value(r) is not None for o in objectives)]
    usable = [r for r in measured if r.is_valid]
    points = [(r.stage_id, objectives[0].value(r), objectives[1].value(r)) for r in usable]
    partial = [(r.stage_id, objectives[0].value(r), objectives[1].value(r)) for r in measured
               if r.status in ("stopped", "paused") and r.epochs]
    front = sorted(pareto_front(usable, objectives), key=lambda r: (objectives[0].value(r), r.stage_id))
    return Panel(name, x_metric, y_metric, points, [r.stage_id for r in front], budget,  # type: ignore[arg-type]
                 partial)  # type: ignore[arg-type]


def _steps(records: list[StageRecord]) -> list[UpKernStep]:
    by_id = {r.stage_id: r for r in records}
    steps = []
    for r in records:
        parent = by_id.get(r.parent_stage)
        if r.init != "upkern" or parent is None:
            continue
        both = r.is_valid and parent.is_valid
        steps.append(UpKernStep(
            r.stage_id, parent.stage_id, r.family_label or r.family_id, parent.kernel_size, r.kernel_size,
            (r.mean_dice - parent.mean_dice) if both else None,  # type: ignore[operator]
            _ratio(r.peak_memory_gb, parent.peak_memory_gb),
            _ratio(r.gflops_train, parent.gflops_train),
        ))
    return steps


def label_names(study_dir: Path) -> list[str] | None:
    """The class names of the study's prepared dataset (background first), None when it records none."""
    try:
        names = json.loads(StudyDir(study_dir).prepared.read_text()).get("label_names")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def build_report_data(study_dir: str | Path) -> ReportData:
    """Read a study directory (possibly partial) into the records the report draws."""
    study = study_front(study_dir)
    records, goals = study.records, study.goals
    panels = [
        _panel(name, x, y, getattr(goals, budget) if budget else None, records) for name, x, y, budget in PANELS
    ]
    choices = {rule: choice.stage.stage_id for rule, choice in rule_choices(records).items()}
    answer = study_answer(records, goals)
    answer_id = answer.budget.stage.stage_id if answer.budget is not None and answer.budget.stage else None
    config = read_saved_study(study_dir)
    budget_epochs, iterations = (config.training.epochs, config.training.iterations_per_epoch) if config else (1, None)
    names = label_names(Path(study_dir))
    return ReportData(
        Path(study_dir), records, goals, study.front_ids, panels, _steps(records),
        {r.stage_id: hover_text(r) for r in records}, choices, scaling_view(records), answer_id, answer.lines(),
        build_timeline(records, budget_epochs, iterations), class_scores(records, names, answer_id),
        class_scores(records, names, answer_id, "nsd"),
    )


def kind_shown(record: StageRecord) -> str:
    """The kind a figure marks a stage with: its label for a network that is not a MedNeXt, else nothing."""
    return "" if record.arch == DEFAULT_ARCH else kind_label(record)


def panel_layouts(data: ReportData, style: Style, legend: bool = True) -> dict[str, PanelLayout]:
    """The layout of every panel (fitted axes, placed labels, legend: see :func:`scalekit.report.layout.panel_layout`)
    keyed by panel name, each followed by its zoom panel (``<name>_zoom``) where it has one."""
    by_id = {r.stage_id: r for r in data.records}
    colours = family_colours([r.family_id for r in data.records])
    layouts = {}
    for panel in data.panels:
        points = [
            PointSpec(sid, x, y, by_id[sid].family_id, by_id[sid].family_label or by_id[sid].family_id,
                      by_id[sid].kernel_size, by_id[sid].memory_method, hollow, by_id[sid].epochs if hollow else None,
                      kind_shown(by_id[sid]))
            for hollow, group in ((False, panel.points), (True, panel.partial)) for sid, x, y in group
        ]
        y_of = {p.stage_id: (p.y, p.hollow) for p in points}
        links = []
        for p in points:
            record = by_id[p.stage_id]
            if record.init == "scratch" or record.parent_stage not in y_of:
                continue
            (y0, hollow0), hollow = y_of[record.parent_stage], p.hollow
            delta = None if hollow or hollow0 else p.y - y0
            links.append(LinkSpec(record.parent_stage, p.stage_id, record.init, delta))
        title = f"{LABELS[panel.y_metric]} vs {LABELS[panel.x_metric]}"
        layout = panel_layout(panel.name, title, panel.x_metric, panel.y_metric, points, links, panel.budget,
                              colours, style, panel.front_ids, answer=data.answer_id, legend=legend)
        layouts[panel.name] = layout
        zoom = zoom_layout(layout)
        if zoom is not None:
            layouts[zoom.name] = zoom
    return layouts
