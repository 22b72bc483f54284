"""Plotly figures for run results: branch histograms with intervals, samples, Pareto frontiers."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go

# Every colour that carries meaning keeps >= 3:1 contrast against both of Streamlit's backgrounds
# (light #ffffff, dark #0e1117; WCAG 1.4.11 for graphics), so it means the same in either theme;
# chart text is set per theme by ``themed`` (>= 4.5:1). tests/test_app_charts.py checks both.
BACKGROUNDS = {"light": "#ffffff", "dark": "#0e1117"}
TEXT = {"light": "#31333f", "dark": "#fafafa"}
GRID = {"light": "#e6e6ea", "dark": "#31333f"}
GENERATED_COLOR = "#1f77b4"
REFERENCE_COLOR = "#9467bd"
TRUTH_COLOR = "#6e7781"  # was near-black: it vanished on the dark background
TAIL_COLOR = "#d62728"
NEUTRAL_COLOR = "#7f7f7f"
GOOD_COLOR = "#2ca02c"
# Okabe & Ito's colour-blind-safe hues that pass on both backgrounds (their yellow, orange and sky blue
# do not on white), then two more; for one colour per solver, student or branch.
GROUP_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#8C6BB1", "#A6761D", "#6e7781", "#1f77b4")
GROUP_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "cross", "hexagon")


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two '#rrggbb' colours (1 to 21)."""
    def lum(h: str) -> float:
        r, g, b_ = (int(h.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4))
        f = lambda c: c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4  # noqa: E731
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b_)
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def themed(fig: go.Figure, theme: str | None) -> go.Figure:
    """``fig`` with its text (title, axis titles, ticks, legend, annotations without their own colour)
    in the theme's text colour and its grid in the theme's grid colour; ``None``: left to Streamlit."""
    if theme not in TEXT:
        return fig
    text, grid = TEXT[theme], GRID[theme]
    fig.update_layout(font_color=text, title_font_color=text, legend_font_color=text)
    fig.update_xaxes(color=text, gridcolor=grid, title_font_color=text, tickfont_color=text)
    fig.update_yaxes(color=text, gridcolor=grid, title_font_color=text, tickfont_color=text)
    return fig


def log_range(values: Sequence[float]) -> list[float]:
    """A log axis range from a little below the smallest value to a little above the largest (log10
    units), so bars start where the data does and 100 vs 200 ms do not both look full."""
    pos = [v for v in values if v and v > 0]
    lo, hi = (min(pos), max(pos)) if pos else (1.0, 10.0)
    return [math.log10(lo) - 0.3, math.log10(hi) + 0.3]


def log_ticks(values: Sequence[float], pad: float = 0.3) -> dict[str, list[Any]]:
    """Tick values and labels for a log axis over ``values`` (padded by ``pad`` decades, as ``log_range``): one
    per decade when the data spans two or more, else 1-2-5 in each decade, so an axis over 3-30 reads 5, 10, 20
    rather than one lone "10"; never Plotly's repeated "2 5" minor labels."""
    pos = [float(v) for v in values if v and float(v) > 0 and math.isfinite(float(v))]
    if not pos:
        return {"tickvals": [], "ticktext": []}
    lo, hi = min(pos) / 10 ** pad, max(pos) * 10 ** pad
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for steps in ((1,) if max(pos) / min(pos) >= 100 else (1, 2, 5), (1, 1.5, 2, 3, 5, 7)):  # >= 2 labels
        ticks = [t for t in (m * 10.0 ** e for e in decades for m in steps) if lo <= t <= hi]
        if len(ticks) >= 2:
            break
    return {"tickvals": ticks, "ticktext": [f"{t:,.6g}" for t in ticks]}


def histogram_figure(rows: Sequence[Mapping[str, Any]], *, tail: str | None,
                     title: str = "Branch rates: generated vs truth", log_y: bool = False) -> go.Figure:
    """Grouped bars per group with Wilson intervals, the truth as markers, the tail branch (the world's
    declared one, ``budget.world_tail``) highlighted."""
    fig = go.Figure()
    groups = list(dict.fromkeys(r.get("group") or "generated" for r in rows))
    labels = list(dict.fromkeys(str(r["label"]) for r in rows))
    for g in groups:
        gr = {str(r["label"]): r for r in rows if (r.get("group") or "generated") == g}
        ys = [float(gr[lab]["rate"]) if lab in gr else None for lab in labels]
        plus = [float(gr[lab]["hi"]) - float(gr[lab]["rate"]) if lab in gr else 0 for lab in labels]
        minus = [float(gr[lab]["rate"]) - float(gr[lab]["lo"]) if lab in gr else 0 for lab in labels]
        color = REFERENCE_COLOR if g == "reference" else GENERATED_COLOR
        fig.add_trace(go.Bar(
            name=f"{g} (95% Wilson)", x=labels, y=ys, marker_color=color,
            marker_line_color=[TAIL_COLOR if lab == tail else color for lab in labels],
            marker_line_width=[3 if lab == tail else 0 for lab in labels],
            error_y=dict(type="data", array=plus, arrayminus=minus, visible=True, color=NEUTRAL_COLOR),
            customdata=[[gr[lab]["count"], gr[lab]["n"], gr[lab]["lo"], gr[lab]["hi"]] if lab in gr else [0, 0, 0, 0]
                        for lab in labels],
            hovertemplate="%{x}: %{y:.2%} (%{customdata[0]}/%{customdata[1]}) "
                          "[%{customdata[2]:.2%}, %{customdata[3]:.2%}]<extra>" + str(g) + "</extra>"))
    truth = {str(r["label"]): r.get("truth") for r in rows if r.get("truth") is not None}
    if truth:
        fig.add_trace(go.Scatter(name="truth", x=labels, y=[truth.get(lab) for lab in labels], mode="markers",
                                 marker=dict(symbol="line-ew-open", size=34, color=TRUTH_COLOR,
                                             line=dict(width=3, color=TRUTH_COLOR)),
                                 hovertemplate="%{x}: truth %{y:.2%}<extra></extra>"))
    if tail is not None:
        fig.add_annotation(x=tail, y=float(truth.get(tail) or 0), text="tail", showarrow=True, arrowcolor=TAIL_COLOR,
                           font=dict(color=TAIL_COLOR), ay=-40)
    fig.update_layout(barmode="group", height=340, title=title, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.15))
    fig.update_yaxes(tickformat=".1%", type="log" if log_y else "linear", title="rate (share of samples)")
    fig.update_xaxes(title="branch")
    return fig


def samples_figure(samples: Sequence[Sequence[float]], columns: Sequence[str] | None,
                   labels: Sequence[str] | None = None, tail: str | None = None) -> go.Figure | None:
    """Sampled points (first two coordinates), each joined to its exact reference solution when the
    world reports one; the tail branch in red. Rollout worlds report rows (rollout, frame, ..., x, y,
    branch): one line per sampled future."""
    if not samples:
        return None
    cols = list(columns or [])
    idx = {c: i for i, c in enumerate(cols)}
    fig = go.Figure()
    if {"x0", "x1"} <= set(idx):
        xs = [r[idx["x0"]] for r in samples]
        ys = [r[idx["x1"]] for r in samples]
        modes = [int(r[idx["mode"]]) for r in samples] if "mode" in idx else None
        is_tail = [labels is not None and tail is not None and m < len(labels) and labels[m] == tail
                   for m in modes] if modes else [False] * len(xs)
        if {"ref_x0", "ref_x1"} <= set(idx):
            lx, ly = [], []
            for r in samples:
                lx += [r[idx["ref_x0"]], r[idx["x0"]], None]
                ly += [r[idx["ref_x1"]], r[idx["x1"]], None]
            fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line=dict(color=NEUTRAL_COLOR, width=1),
                                     name="exact ODE solution -> sample", hoverinfo="skip"))
        for flag, name, color in ((False, "samples", GENERATED_COLOR), (True, f"tail ({tail})", TAIL_COLOR)):
            sel = [i for i, t in enumerate(is_tail) if t == flag]
            if sel:
                fig.add_trace(go.Scatter(x=[xs[i] for i in sel], y=[ys[i] for i in sel], mode="markers", name=name,
                                         marker=dict(color=color, size=5 if not flag else 8)))
        fig.update_layout(title="Samples (lines: from the exact solution of the same noise)")
        fig.update_xaxes(title="x0 (first coordinate)")
        fig.update_yaxes(title="x1 (second coordinate)", scaleanchor="x", scaleratio=1)
    elif {"rollout", "x", "y"} <= set(idx):
        # Rollouts: one line per sampled future, in frame order, coloured by its branch (tail in red).
        by: dict[Any, list[Sequence[float]]] = {}
        for r in samples:
            by.setdefault(r[idx["rollout"]], []).append(r)
        palette = GROUP_COLORS
        shown: set[str] = set()
        order = [c for c in ("frame", "substep") if c in idx]
        for k, rs in list(by.items())[:200]:
            rs = sorted(rs, key=lambda r: tuple(r[idx[c]] for c in order))
            code = int(rs[0][idx["branch"]]) if "branch" in idx else -1
            label = labels[code] if labels is not None and 0 <= code < len(labels) else "rollout"
            color = TAIL_COLOR if label == tail else palette[code % len(palette)] if code >= 0 else GENERATED_COLOR
            fig.add_trace(go.Scatter(x=[r[idx["x"]] for r in rs], y=[r[idx["y"]] for r in rs], mode="lines+markers",
                                     line=dict(color=color, width=3 if label == tail else 1.5),
                                     marker=dict(size=3), name=label, legendgroup=label,
                                     showlegend=label not in shown))
            shown.add(label)
        fig.update_layout(title="Sampled rollouts (one line per future; tail branch in red)")
        # each axis at the data's own scale (no equal aspect: the motion is mostly along one axis)
        fig.update_xaxes(title="x (m)")
        fig.update_yaxes(title="y (m)")
    elif {"label", "p0", "p63"} <= set(idx):
        return image_grid_figure(samples, idx, labels, tail)
    else:
        return None
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.2))
    return fig


def image_grid_figure(samples: Sequence[Sequence[float]], idx: dict[str, int], labels: Sequence[str] | None,
                      tail: str | None, per_row: int = 8) -> go.Figure:
    """Generated 8x8 images (rows: label, p0..p63 in [-1, 1]) as one mosaic, each titled by its label;
    the tail's images framed in red."""
    rows = list(samples)[: per_row * per_row]
    side, gap = 8, 1
    n_rows = (len(rows) + per_row - 1) // per_row
    height, width = n_rows * (side + gap) - gap, per_row * (side + gap) - gap
    z: list[list[float | None]] = [[None] * width for _ in range(height)]
    fig = go.Figure()
    for k, r in enumerate(rows):
        top, left = (k // per_row) * (side + gap), (k % per_row) * (side + gap)
        for i in range(side):
            for j in range(side):
                z[top + i][left + j] = r[idx[f"p{i * side + j}"]]
        code = int(r[idx["label"]])
        name = labels[code] if labels is not None and 0 <= code < len(labels) else str(code)
        fig.add_annotation(x=left + side / 2 - 0.5, y=top - 0.6, text=name, showarrow=False, font=dict(size=10),
                           yanchor="bottom")
        if name == tail:
            fig.add_shape(type="rect", x0=left - 0.5, x1=left + side - 0.5, y0=top - 0.5, y1=top + side - 0.5,
                          line=dict(color=TAIL_COLOR, width=2))
    fig.add_trace(go.Heatmap(z=z, colorscale="Greys", zmin=-1, zmax=1, showscale=False, hoverinfo="skip"))
    fig.update_yaxes(autorange="reversed", visible=False, scaleanchor="x", scaleratio=1)
    fig.update_xaxes(visible=False)
    fig.update_layout(title=f"Generated images and the classifier's labels (tail {tail} framed in red)",
                      height=120 + 48 * n_rows, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def pareto_front(points: Sequence[tuple[float, float]], *, maximize_y: bool = False) -> list[int]:
    """Indices of non-dominated points (lower x better; lower y better unless maximize_y), by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1] if maximize_y else points[i][1]))
    front, best = [], None
    for i in order:
        y = points[i][1]
        if best is None or (y > best if maximize_y else y < best):
            front.append(i)
            best = y
    return front




def pareto_figure(xs: Sequence[float], ys: Sequence[float], ids: Sequence[str], hover: Sequence[str], *,
                  x_title: str, y_title: str, maximize_y: bool = False, log_x: bool = True,
                  groups: Sequence[str] | None = None, shapes: Sequence[str] | None = None,
                  frontier: bool = True) -> go.Figure:
    """Runs as points (one colour per ``groups`` value, e.g. the solver or student; one symbol per
    ``shapes`` value, e.g. the grid), the frontier as a step line (unless ``frontier`` is False: the
    runs table's scatter of any two columns); each point carries its run id.

    The browser styles every point on each of Plotly's layout passes, so the figure asks for as few as
    it can without hiding a run: runs at the same x and y with the same colour and symbol are one
    point (its hover says how many; a click opens the first), points have no outline, and the margins
    already hold the legend and axis labels of a wide page (else Plotly draws everything a second time
    to widen them; docs/bench-dashboard.md)."""
    front = pareto_front(list(zip(xs, ys)), maximize_y=maximize_y)
    fig = go.Figure()
    groups = list(groups) if groups is not None else ["runs"] * len(xs)
    shapes = list(shapes) if shapes is not None else [""] * len(xs)
    shape_of = {v: GROUP_SYMBOLS[i % len(GROUP_SYMBOLS)] for i, v in enumerate(dict.fromkeys(shapes))}
    same: dict[tuple[Any, ...], list[int]] = {}  # the runs each drawn point stands for
    for i, key in enumerate(zip(xs, ys, groups, shapes)):
        same.setdefault(key, []).append(i)
    for gi, g in enumerate(dict.fromkeys(groups)):
        sel = [runs for (_, _, gr, _), runs in same.items() if gr == g]
        fig.add_trace(go.Scatter(
            x=[xs[r[0]] for r in sel], y=[ys[r[0]] for r in sel], mode="markers", name=g,
            customdata=[ids[r[0]] for r in sel],
            text=[hover[r[0]] + (f" (and {len(r) - 1} more run(s) at this point)" if len(r) > 1 else "") for r in sel],
            marker=dict(size=10, color=GROUP_COLORS[gi % len(GROUP_COLORS)], symbol=[shape_of[shapes[r[0]]] for r in sel]),
            hovertemplate="%{text}<br>" + x_title + " %{x:,.4g}<br>" + y_title + " %{y:.4g}<extra>click to open</extra>"))
    if frontier:
        fig.add_trace(go.Scatter(x=[xs[i] for i in front], y=[ys[i] for i in front], mode="lines", name="Pareto frontier",
                                 hoverinfo="skip", line=dict(color=TAIL_COLOR, shape="hv", width=2)))
    if len(shape_of) > 1:
        for shape, symbol in shape_of.items():  # a legend of the symbols alone (grey)
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"grid: {shape}", hoverinfo="skip",
                                     marker=dict(size=10, symbol=symbol, color=NEUTRAL_COLOR)))
    fig.update_xaxes(type="log" if log_x else "linear", title=x_title, **(log_ticks(xs) if log_x else {}))
    fig.update_yaxes(title=y_title)
    # l and b hold the y labels, the x title and three legend rows on a page >= ~1000 px wide; narrower, Plotly widens them
    fig.update_layout(height=460, margin=dict(l=80, r=10, t=30, b=140), legend=dict(orientation="h", y=-0.2),
                      clickmode="event+select")
    return fig
