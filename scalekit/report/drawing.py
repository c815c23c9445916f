"""Plotly drawing of the report's figures from their computed layouts (:mod:`scalekit.report.layout`,
:mod:`scalekit.report.scalingplot`, :mod:`scalekit.report.timeline`, :mod:`scalekit.report.perclass`): no calculation here beyond
turning records into traces. With :mod:`scalekit.report.output`, the only modules that import plotly.

A figure drawn with ``legend`` (the static images, which must read on their own in a paper) shows its small
legend above the plot; without it (the HTML page, whose one shared key explains every figure) it shows none.
"""

from __future__ import annotations

import plotly.graph_objects as go

from scalekit.report.key import ANSWER_COLOUR, BUDGET_COLOUR, KEY_COLOUR, LINE_STYLES
from scalekit.report.layout import DrawnLabel, PanelLayout
from scalekit.report.perclass import ClassScores, HeatmapGeometry
from scalekit.report.geometry import Style
from scalekit.report.scalingplot import AXIS_COLOURS, GROUP_NAMES, ScalingLayout
from scalekit.report.timeline import END_KINDS, Timeline, TimelineGeometry

END_MARKERS = {"completed": ("circle", None), "halted": ("circle-open", None), "running": ("triangle-right", None),
               "failed": ("x", "#c0392b"), "infeasible": ("circle-x-open", "#888888"),
               "not trained": ("circle-open", "#bbbbbb")}
"""Timeline end kind -> marker symbol and colour (None: the family's)."""
END_NAMES = {"completed": "completed", "halted": "halted at a rung", "running": "running", "failed": "failed",
             "infeasible": "infeasible", "not trained": "not trained"}


def _key_trace(name: str, **kwargs) -> go.Scatter:
    """A legend entry only: a trace without points."""
    return go.Scatter(x=[None], y=[None], name=name, hoverinfo="skip", **kwargs)


def frame(fig: go.Figure, style: Style, title: str, x_title: str, y_title: str,
          margins: tuple[float, float, float, float], x_range: tuple[float, float] | None,
          y_range: tuple[float, float] | None, legend: bool, height: int | None = None,
          width: int | None = None) -> go.Figure:
    """Size, fonts, fixed margins (labels were placed for exactly this plot area), axes and legend (with
    ``legend``; none otherwise). The title is shown only where the style shows titles."""
    f = style.font_px
    left, right, top, bottom = margins
    axis = dict(showline=True, linecolor="#444", ticks="outside", mirror=True, automargin=False,
                zeroline=False, gridcolor="#e6e6e6", title_font=dict(size=f), tickfont=dict(size=f))
    for trace in fig.data:  # one group per entry: a horizontal legend then flows like text, not a grid of
        trace.legendgroup = trace.name  # columns as wide as its widest entry
    title = title if style.show_title else ""
    width = width or style.width_px
    fig.update_layout(
        template="plotly_white", width=width, height=height or style.height_px, paper_bgcolor="white",
        plot_bgcolor="white", font=dict(family="Arial, Helvetica, sans-serif", size=f, color="#222"),
        margin=dict(l=left, r=right, t=top, b=bottom, pad=0, autoexpand=False), showlegend=legend,
        xaxis=dict(axis, title_text=x_title, tickangle=0, nticks=max(5, int((width - left - right) / (3.5 * f))),
                   **({"range": list(x_range)} if x_range else {})),
        yaxis=dict(axis, title_text=y_title, **({"range": list(y_range)} if y_range else {})),
        legend=dict(orientation="h", x=0, y=1, xanchor="left", yanchor="bottom", font=dict(size=f),
                    bgcolor="rgba(255,255,255,0)", tracegroupgap=0, itemwidth=30),
        title=dict(text=title, x=0.01, xanchor="left", y=1 - 4 / (height or style.height_px), yanchor="top",
                   font=dict(size=round(f * 1.15))) if title else None,
    )
    return fig


def _draw_labels(fig: go.Figure, labels: list[DrawnLabel], font_px: float) -> None:
    for label in labels:
        if label.leader is not None:
            (x0, y0), (x1, y1) = label.leader
            fig.add_shape(type="line", x0=x0, y0=y0, x1=x1, y1=y1, xref="x", yref="y",
                          layer="below", line=dict(color=label.colour, width=0.8))
        fig.add_annotation(x=label.at[0], y=label.at[1], xref="x", yref="y", text=label.text, showarrow=False,
                           xanchor="center", yanchor="middle", name=label.kind,
                           font=dict(size=font_px, color=label.colour))


def panel_figure(layout: PanelLayout, hover: dict[str, str], legend: bool = True) -> go.Figure:
    """One scatter figure drawn from its layout: the front beneath everything, a trace per family (colour;
    the marker is the kernel, or the kind), the answer's ring, chain links, the budget, the zoom box and the labels."""
    style = layout.style
    xy = {p.stage_id: (p.x, p.y) for p in layout.points}
    front = LINE_STYLES["front"]
    fig = go.Figure(go.Scatter(
        x=[xy[s][0] for s in layout.front], y=[xy[s][1] for s in layout.front], mode="lines", name="front",
        line=dict(shape="hv", color=front.colour, width=front.width, dash=front.dash), hoverinfo="skip",
        showlegend=("front", "front") in layout.legend,
    ))
    named = dict(layout.legend)
    for fid in sorted({p.family_id for p in layout.points}):
        pts = [p for p in layout.points if p.family_id == fid]
        fig.add_trace(go.Scatter(
            x=[p.x for p in pts], y=[p.y for p in pts], mode="markers", name=pts[0].family,
            showlegend=f"family:{fid}" in named, cliponaxis=False,  # a Dice of 0 shows its whole marker
            marker=dict(size=style.marker_px, color=layout.colours[fid], line=dict(width=1.5),
                        symbol=[layout.symbols[p.shape] + ("-open" if p.hollow else "") for p in pts],
                        opacity=[0.55 if p.hollow else 1.0 for p in pts]),
            hovertext=[hover[p.stage_id] for p in pts], hovertemplate="%{hovertext}<extra></extra>",
        ))
    if layout.answer_id is not None:
        x, y = xy[layout.answer_id]
        fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name="answer", showlegend=False, cliponaxis=False,
                                 hoverinfo="skip", marker=dict(size=2 * style.marker_px, symbol="circle-open",
                                                               color=ANSWER_COLOUR, line=dict(width=3))))
    for shape, symbol in layout.symbols.items():
        if f"shape:{shape}" in named:
            fig.add_trace(_key_trace(shape, mode="markers",
                                     marker=dict(size=style.marker_px, color=KEY_COLOUR, symbol=symbol)))
    _draw_links(fig, layout, xy, named)
    if "halted" in named:
        fig.add_trace(_key_trace(named["halted"], mode="markers",
                                 marker=dict(size=style.marker_px, color=KEY_COLOUR, symbol="circle-open")))
    if layout.x.budget_mode == "line":
        fig.add_vline(x=layout.x.budget, line_dash="dash", line_color=BUDGET_COLOUR, line_width=1.2)
    if layout.zoom_box is not None:
        x0, y0, x1, y1 = layout.zoom_box
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, xref="x", yref="y", name="zoom",
                      line=dict(color=KEY_COLOUR, width=1, dash="dash"))
    _draw_labels(fig, layout.labels, style.font_px)
    return frame(fig, style, layout.title, layout.x_title, layout.y_title, layout.margins,
                 (layout.x.lo, layout.x.hi), (layout.y.lo, layout.y.hi), legend and bool(layout.legend))


def _draw_links(fig: go.Figure, layout: PanelLayout, xy: dict[str, tuple[float, float]],
                named: dict[str, str]) -> None:
    """UpKern steps as arrows in the family's colour; continuation controls as grey dotted lines."""
    standoff = layout.style.marker_px / 2 + 2
    colour_of = {p.stage_id: layout.colours[p.family_id] for p in layout.points}
    upkern, control = LINE_STYLES["upkern"], LINE_STYLES["continue"]
    controls: list[float | None] = []
    for link in layout.links:
        (x0, y0), (x1, y1) = xy[link.from_id], xy[link.to_id]
        if link.kind == "continue":
            controls += [x0, y0, x1, y1]
            continue
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=2, arrowsize=1.1, arrowwidth=upkern.width,
                           arrowcolor=upkern.colour or colour_of[link.to_id], standoff=standoff,
                           startstandoff=standoff)
    if "upkern" in named:
        fig.add_trace(_key_trace(named["upkern"], mode="lines", line=dict(color=KEY_COLOUR, width=upkern.width)))
    if controls:
        xs = [v for i in range(0, len(controls), 4) for v in (controls[i], controls[i + 2], None)]
        ys = [v for i in range(0, len(controls), 4) for v in (controls[i + 1], controls[i + 3], None)]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=named.get("continue", "control"), hoverinfo="skip",
                                 showlegend="continue" in named,
                                 line=dict(color=control.colour, width=control.width, dash=control.dash)))


def scaling_figure(layout: ScalingLayout, legend: bool = True) -> go.Figure:
    """ΔDice against Δ memory of every move, coloured by the axis it moves (black: several axes at once),
    each labelled with its change where the label found a place."""
    style, fig = layout.style, go.Figure()
    for group, colour in AXIS_COLOURS.items():
        pts = [p for p in layout.points if p.group == group]
        if pts:
            fig.add_trace(go.Scatter(
                x=[p.x for p in pts], y=[p.y for p in pts], mode="markers", name=GROUP_NAMES[group],
                marker=dict(size=style.marker_px, color=colour, symbol="x" if group == "compound" else "circle"),
                hovertext=[f"{p.move.from_id} → {p.move.to_id}: {p.move.change}<br>ΔDice {p.move.d_dice:+.4f}, "
                           f"Δ {p.x:+.3g} {layout.unit}" for p in pts], hovertemplate="%{hovertext}<extra></extra>",
            ))
    fig.add_hline(y=0, line_color="#888", line_width=1)
    if not layout.points:
        fig.add_annotation(x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                           text="no two completed stages differ in the scaling axes alone yet")
    _draw_labels(fig, layout.labels, style.font_px)
    return frame(fig, style, layout.title, layout.x_title, layout.y_title, layout.margins,
                 (layout.area.x.lo, layout.area.x.hi), (layout.area.y.lo, layout.area.y.hi),
                 legend and bool(layout.legend))


def timeline_figure(timeline: Timeline, geometry: TimelineGeometry, colours: dict[str, str],
                    style: Style) -> go.Figure:
    """A row per stage: a bar in its family's colour over the epochs it trained since scratch, a tick at each
    rung it was scored at, its end marked by how it ended (and ``@2 ep`` beside a halted one), dotted lines
    where fully trained stages end, and the compute spent against the full chain's above the plot. Every end
    but a completed one (a filled marker) is named beside it, so the figure needs no legend."""
    f, bars, fig = style.font_px, timeline.bars, go.Figure()
    rows = {b.stage_id: len(bars) - i for i, b in enumerate(bars)}
    for mark in geometry.budget_marks:
        fig.add_vline(x=mark, line_dash="dot", line_color="#999", line_width=1)
    for b in bars:
        if b.end > b.start:
            fig.add_trace(go.Scatter(x=[b.start, b.end], y=[rows[b.stage_id]] * 2, mode="lines", showlegend=False,
                                     line=dict(color=colours.get(b.family_id, KEY_COLOUR), width=0.55 * f),
                                     hoverinfo="skip"))
    ticks = [(r, rows[b.stage_id]) for b in bars for r in b.rungs]
    fig.add_trace(go.Scatter(x=[x for x, _ in ticks], y=[y for _, y in ticks], mode="markers", name="scored at a rung",
                             marker=dict(symbol="line-ns", size=0.9 * f, line=dict(width=2, color="#222")),
                             hoverinfo="skip"))
    for kind in END_KINDS:
        symbol, colour = END_MARKERS[kind]
        ends = [b for b in bars if b.end_kind == kind]
        if ends:
            fig.add_trace(go.Scatter(
                x=[b.end for b in ends], y=[rows[b.stage_id] for b in ends], mode="markers", name=END_NAMES[kind],
                marker=dict(symbol=symbol, size=style.marker_px, line=dict(width=1.5, color=colour or "#222"),
                            color=[colour or colours.get(b.family_id, KEY_COLOUR) for b in ends]),
                hovertext=[f"{b.stage_id}: {END_NAMES[kind]}, epochs {b.start}→{b.end}" for b in ends],
                hovertemplate="%{hovertext}<extra></extra>"))
    for b in bars:
        if b.note:
            fig.add_annotation(x=b.end, y=rows[b.stage_id], text=b.note, showarrow=False, xanchor="left",
                               xshift=style.marker_px, font=dict(size=f, color="#444"))
    fig.add_annotation(x=0, y=1, xref="paper", yref="paper", yanchor="bottom", xanchor="left", showarrow=False,
                       xshift=4 - geometry.margins[0], yshift=6, align="left", text="<br>".join(timeline.compute.lines()), name="compute",
                       font=dict(size=f, color="#222"))
    fig = frame(fig, style, "Search timeline", "epochs since scratch", "", geometry.margins, geometry.x_range,
                (0.3, len(bars) + 0.7), False, geometry.height_px, geometry.width_px)
    return fig.update_yaxes(tickvals=list(rows.values()), ticktext=[b.name for b in bars], showgrid=False)


def heatmap_figure(scores: ClassScores, geometry: HeatmapGeometry, style: Style) -> go.Figure:
    """Stages (rows, best mean first) × classes, the score written in each cell; gaps where none was scored."""
    rows = list(reversed(scores.rows))
    fig = go.Figure(go.Heatmap(
        z=[r.values for r in rows], x=scores.classes, y=[r.label for r in rows], zmin=0, zmax=1,
        colorscale="Viridis", texttemplate="%{z:.2f}", textfont=dict(size=style.font_px),
        colorbar=dict(thickness=style.font_px, len=1, tickfont=dict(size=style.font_px)), xgap=1, ygap=1,
        hovertemplate="%{y}<br>%{x}: %{z:.4f}<extra></extra>",
    ))
    fig = frame(fig, style, f"Per-class {'Dice' if scores.metric == 'dice' else 'NSD'}", "", "", geometry.margins,
                None, None, False, geometry.height_px, geometry.width_px)
    fig.update_xaxes(showgrid=False, mirror=False, ticks="", tickangle=-90 if geometry.turned else 0)
    return fig.update_yaxes(showgrid=False, mirror=False, ticks="")
