"""Plotly drawing of the report's figures from their computed layouts (:mod:`scalekit.figures`,
:mod:`scalekit.scaling`): no calculation here beyond turning records into traces. With :mod:`scalekit.report`,
the only modules that import plotly.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from scalekit.figures import KEY_COLOUR, PanelLayout, legend_margins
from scalekit.plotlayout import Style, fit_axis
from scalekit.scaling import AXES, ScalingView

AXIS_COLOURS = {"B": "#1f77b4", "R": "#2ca02c", "C": "#ff7f0e", "k": "#9467bd", "compound": "#222222"}


def _key_trace(name: str, **kwargs) -> go.Scatter:
    """A legend entry only: a trace without points."""
    return go.Scatter(x=[None], y=[None], name=name, hoverinfo="skip", **kwargs)


def frame(fig: go.Figure, style: Style, title: str, x_title: str, y_title: str,
           margins: tuple[float, float, float, float], x_range: tuple[float, float],
           y_range: tuple[float, float]) -> go.Figure:
    """Size, fonts, fixed margins (labels were placed for exactly this plot area), axes and legend."""
    f = style.font_px
    left, right, top, bottom = margins
    axis = dict(showline=True, linecolor="#444", ticks="outside", mirror=True, automargin=False,
                zeroline=False, gridcolor="#e6e6e6", title_font=dict(size=f), tickfont=dict(size=f))
    for trace in fig.data:  # one group per entry: a horizontal legend then flows like text, not a grid of
        trace.legendgroup = trace.name  # columns as wide as its widest entry
    fig.update_layout(
        template="plotly_white", width=style.width_px, height=style.height_px, paper_bgcolor="white",
        plot_bgcolor="white", font=dict(family="Arial, Helvetica, sans-serif", size=f, color="#222"),
        margin=dict(l=left, r=right, t=top, b=bottom, pad=0, autoexpand=False),
        xaxis=dict(axis, title_text=x_title, range=list(x_range)),
        yaxis=dict(axis, title_text=y_title, range=list(y_range)),
        legend=dict(orientation="h", x=0, y=1, xanchor="left", yanchor="bottom", font=dict(size=f),
                    bgcolor="rgba(255,255,255,0)", tracegroupgap=0),
        title=dict(text=title, x=0.01, xanchor="left", y=1 - 4 / style.height_px, yanchor="top",
                   font=dict(size=round(f * 1.15))) if title else None,
    )
    return fig


def panel_figure(layout: PanelLayout, front_ids: Sequence[str], hover: dict[str, str]) -> go.Figure:
    """One scatter figure drawn from its layout: a trace per family (colour), the front as a step line
    through ``front_ids``, the kernel key, chain arrows, the budget and the placed labels."""
    style, f = layout.style, layout.style.font_px
    xy = {p.stage_id: (p.x, p.y) for p in layout.points}
    fig = go.Figure()
    for fid in dict.fromkeys(p.family_id for p in layout.points):
        pts = [p for p in layout.points if p.family_id == fid]
        fig.add_trace(go.Scatter(
            x=[p.x for p in pts], y=[p.y for p in pts], mode="markers", name=pts[0].family,
            showlegend=fid in layout.legend_families, cliponaxis=False,  # a Dice of 0 shows its whole marker
            marker=dict(size=style.marker_px, color=layout.colours[fid], line=dict(width=1.5),
                        symbol=[layout.symbols[p.kernel] + ("-open" if p.hollow else "") for p in pts],
                        opacity=[0.55 if p.hollow else 1.0 for p in pts]),
            hovertext=[hover[p.stage_id] for p in pts], hovertemplate="%{hovertext}<extra></extra>",
        ))
    fig.add_trace(go.Scatter(
        x=[xy[s][0] for s in front_ids], y=[xy[s][1] for s in front_ids], mode="lines",
        name="Pareto front", line=dict(shape="hv", color="black", width=1.2), hoverinfo="skip",
    ))
    for kernel, symbol in layout.symbols.items():
        fig.add_trace(_key_trace(f"k{kernel}", mode="markers",
                                 marker=dict(size=style.marker_px, color=KEY_COLOUR, symbol=symbol)))
    _draw_links(fig, layout, xy)
    if any(p.hollow for p in layout.points):
        fig.add_trace(_key_trace("scored at a rung only", mode="markers",
                                 marker=dict(size=style.marker_px, color=KEY_COLOUR, symbol="circle-open")))
    if layout.x.budget_mode == "line":
        fig.add_vline(x=layout.x.budget, line_dash="dash", line_color="firebrick", line_width=1.2)
    for label in layout.labels:
        if label.leader is not None:
            (x0, y0), (x1, y1) = label.leader
            fig.add_shape(type="line", x0=x0, y0=y0, x1=x1, y1=y1, xref="x", yref="y",
                          layer="below", line=dict(color=label.colour, width=0.8))
        fig.add_annotation(x=label.at[0], y=label.at[1], xref="x", yref="y", text=label.text, showarrow=False,
                           xanchor="center", yanchor="middle", font=dict(size=f, color=label.colour))
    return frame(fig, style, layout.title, layout.x_title, layout.y_title, layout.margins,
                  (layout.x.lo, layout.x.hi), (layout.y.lo, layout.y.hi))


def _draw_links(fig: go.Figure, layout: PanelLayout, xy: dict[str, tuple[float, float]]) -> None:
    """UpKern steps as arrows in the family's colour; continuation controls as dotted lines."""
    standoff = layout.style.marker_px / 2 + 2
    colour_of = {p.stage_id: layout.colours[p.family_id] for p in layout.points}
    controls: list[float | None] = []
    for link in layout.links:
        (x0, y0), (x1, y1) = xy[link.from_id], xy[link.to_id]
        if link.kind == "continue":
            controls += [x0, y0, x1, y1]
            continue
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=2, arrowsize=1.1, arrowwidth=1.4,
                           arrowcolor=colour_of[link.to_id], standoff=standoff, startstandoff=standoff)
    if any(link.kind == "upkern" for link in layout.links):
        fig.add_trace(_key_trace(f"UpKern step ({'ΔNSD' if layout.name.startswith('nsd') else 'ΔDice'})",
                                 mode="lines", line=dict(color=KEY_COLOUR, width=1.4)))
    if controls:
        xs = [v for i in range(0, len(controls), 4) for v in (controls[i], controls[i + 2], None)]
        ys = [v for i in range(0, len(controls), 4) for v in (controls[i + 1], controls[i + 3], None)]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="continued (control)", hoverinfo="skip",
                                 line=dict(color=KEY_COLOUR, width=1.4, dash="dot")))


def scaling_figure(view: ScalingView, style: Style) -> go.Figure:
    """ΔDice against ΔGiB of every move, coloured by the axis it moves (black: several axes at once)."""
    moves = view.single + [c.move for c in view.compound]
    moves = [m for m in moves if m.d_gib is not None]
    groups = {axis: [m for m in moves if m.axes == (axis,)] for axis in AXES}
    groups["compound"] = [m for m in moves if m.compound]
    names = {**{a: f"{a}: {AXES[a]}" for a in AXES}, "compound": "several axes"}
    fig = go.Figure()
    for axis, group in groups.items():
        if group:
            fig.add_trace(go.Scatter(
                x=[m.d_gib for m in group], y=[m.d_dice for m in group], mode="markers", name=names[axis],
                marker=dict(size=style.marker_px, color=AXIS_COLOURS[axis],
                            symbol="x" if axis == "compound" else "circle"),
                hovertext=[f"{m.from_id} → {m.to_id}: {m.change}<br>ΔDice {m.d_dice:+.4f}, ΔGiB {m.d_gib:+.3f}"
                           for m in group], hovertemplate="%{hovertext}<extra></extra>",
            ))
    x = fit_axis([m.d_gib for m in moves], floor=None)  # type: ignore[misc]
    y = fit_axis([m.d_dice for m in moves] + [0.0], floor=None)
    fig.add_hline(y=0, line_color="#888", line_width=1)
    if not moves:
        fig.add_annotation(x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                           text="no two completed stages differ in the scaling axes alone yet")
    entries = [names[a] for a, group in groups.items() if group]
    return frame(fig, style, "Compound scaling: what each move bought" if style.show_title else "",
                  "Δ peak GPU memory (GiB)", "ΔDice", legend_margins(style, entries), (x.lo, x.hi), (y.lo, y.hi))
