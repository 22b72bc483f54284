"""The dashboard's figure builders: Pareto frontier, histogram tail, rollout lines."""

from app import charts


def test_pareto_front_minimise_and_maximise():
    pts = [(4, 0.02), (8, 0.01), (8, 0.03), (16, 0.01), (2, 0.05), (32, 0.0)]
    assert [pts[i] for i in charts.pareto_front(pts)] == [(2, 0.05), (4, 0.02), (8, 0.01), (32, 0.0)]
    rec = [(4, 0.5), (8, 0.7), (16, 0.6), (32, 0.9)]
    assert [rec[i] for i in charts.pareto_front(rec, maximize_y=True)] == [(4, 0.5), (8, 0.7), (32, 0.9)]


def test_pareto_draws_coinciding_runs_once_and_keeps_every_other_point():
    """Runs at the same cost and metric with the same colour and symbol are one point (the browser styles
    each point on every layout pass); its hover counts the others and a click opens the first. Runs that
    differ in any of x, y, colour or symbol stay separate points, and the frontier is over every run."""
    xs, ys = [4, 4, 4, 4, 8], [0.1, 0.1, 0.1, 0.1, 0.05]
    groups, shapes = ["euler", "euler", "euler", "heun", "euler"], ["karras", "karras", "uniform", "karras", "karras"]
    fig = charts.pareto_figure(xs, ys, ["r1", "r2", "r3", "r4", "r5"], ["a", "b", "c", "d", "e"], x_title="x",
                               y_title="y", groups=groups, shapes=shapes)
    euler, heun = (next(t for t in fig.data if t.name == n) for n in ("euler", "heun"))
    assert list(euler.customdata) == ["r1", "r3", "r5"] and list(heun.customdata) == ["r4"]
    assert list(euler.text) == ["a (and 1 more run(s) at this point)", "c", "e"]
    assert list(euler.marker.symbol) == ["circle", "square", "circle"]
    frontier = next(t for t in fig.data if t.name == "Pareto frontier")
    assert list(frontier.x) == [4, 8]


def test_histogram_highlights_the_declared_tail():
    rows = [{"group": "solver", "label": "common", "count": 95, "n": 100, "rate": 0.95, "lo": 0.89, "hi": 0.98,
             "truth": 0.97},
            {"group": "solver", "label": "rare", "count": 5, "n": 100, "rate": 0.05, "lo": 0.02, "hi": 0.11,
             "truth": 0.03},
            {"group": "reference", "label": "rare", "count": 3, "n": 100, "rate": 0.03, "lo": 0.01, "hi": 0.08,
             "truth": 0.03}]
    fig = charts.histogram_figure(rows, tail="rare")
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.name for b in bars] == ["solver (95% Wilson)", "reference (95% Wilson)"]
    assert list(bars[0].marker.line.width) == [0, 3]  # the tail is outlined
    assert list(bars[0].error_y.array) == [0.98 - 0.95, 0.11 - 0.05]


def test_rollouts_draw_one_line_per_future_coloured_by_branch():
    rows = [(float(i), float(f), 0.0, 0.1 * f, 0.2 * f * i, float(i % 3)) for i in range(6) for f in (3, 0, 2, 1)]
    fig = charts.samples_figure(rows, ["rollout", "frame", "substep", "y", "x", "branch"],
                                ["waits", "crosses", "darts"], "darts")
    assert len(fig.data) == 6
    assert [t.name for t in fig.data if t.showlegend] == ["waits", "crosses", "darts"]
    darts = [t for t in fig.data if t.name == "darts"]
    assert all(t.line.color == charts.TAIL_COLOR for t in darts)
    assert list(fig.data[1].y) == [0.0, 0.1, 0.2, 0.30000000000000004]  # frames in order


def _figures():
    """One of each figure the pages draw, from small fixed inputs."""
    from app import bill_view, run_view
    from fastdiff_core import budget

    bill = budget.NFEBill(S=4, C=1.0, H=12, P=10, R=4)
    hist = [{"group": "solver", "label": lab, "count": c, "n": 100, "rate": c / 100, "lo": c / 200, "hi": c / 80,
             "truth": c / 100} for lab, c in (("waits", 60), ("darts", 5))]
    rows = [(float(i), float(f), 0.0, 0.1 * f, 0.2 * f, float(i % 2)) for i in range(4) for f in range(3)]
    return {
        "waterfall": bill_view.waterfall_figure(budget.waterfall(bill, distilled=True)),
        "latency": bill_view.latency_figure(budget.project_latency(bill, budget.ProductionModel())),
        "measured": run_view.measured_latency_figure([{"what": "cycle", "batch": 1, "seconds": 0.2, "device": "cpu"}]),
        "histogram": charts.histogram_figure(hist, tail="darts"),
        "rollouts": charts.samples_figure(rows, ["rollout", "frame", "substep", "y", "x", "branch"],
                                          ["waits", "darts"], "darts"),
        "pareto": charts.pareto_figure([4, 8, 16], [0.1, 0.05, 0.04], ["r1", "r2", "r3"], ["a", "b", "c"],
                                       x_title="NFE per planning cycle (counted)", y_title="tail_rate_error",
                                       groups=["euler", "heun", "euler"], shapes=["karras", "karras", "uniform"]),
    }


def test_log_ticks_read_at_any_span():
    """A Pareto cost axis over 3-30 NFE showed one label ("10"); 1-2-5 labels over a narrow span, decades over a
    wide one."""
    assert charts.log_ticks([3, 30])["tickvals"] == [2, 5, 10, 20, 50]
    assert charts.log_ticks([24, 24])["ticktext"] == ["15", "20", "30"]  # one value: still two labels or more
    assert charts.log_ticks([4, 48_000])["ticktext"] == ["10", "100", "1,000", "10,000"]  # decades only
    assert charts.log_ticks([0.0015, 0.004])["ticktext"][:2] == ["0.001", "0.002"]
    assert charts.log_ticks([]) == {"tickvals": [], "ticktext": []}


def test_every_axis_has_a_title_and_colours_keep_their_meaning_in_both_themes():
    """Item 6: titles on every axis; in light and dark, chart text >= 4.5:1 against the background and every
    colour that carries meaning (bars, markers, truth, tail, groups) >= 3:1; log axes carry labels chosen from
    the data (decades, or 1-2-5 over a narrow span) and start where the data does."""
    for theme, bg in charts.BACKGROUNDS.items():
        assert charts.contrast(charts.TEXT[theme], bg) >= 4.5
        for color in (charts.GENERATED_COLOR, charts.REFERENCE_COLOR, charts.TRUTH_COLOR, charts.TAIL_COLOR,
                      charts.NEUTRAL_COLOR, charts.GOOD_COLOR, *charts.GROUP_COLORS):
            assert charts.contrast(color, bg) >= 3.0, (theme, color)
        for name, fig in _figures().items():
            fig = charts.themed(fig, theme)
            assert fig.layout.font.color == charts.TEXT[theme]
            for axis in (fig.layout.xaxis, fig.layout.yaxis):
                assert axis.title.text, (name, "an axis without a title")
                if axis.type == "log":  # bars on a log axis start at its lower end: set where the data is
                    labels = list(axis.tickvals or ())  # set from the data: at least two, never Plotly's "2 5" minors
                    assert len(labels) >= 2 and list(axis.ticktext) == [f"{t:,.6g}" for t in labels], name
                    assert axis.range is not None or not any(t.type == "bar" for t in fig.data), name
            for trace in fig.data:
                for attr in ("marker.color", "line.color", "marker.line.color"):
                    obj = trace
                    for part in attr.split("."):
                        obj = getattr(obj, part, None)
                    colors = obj if isinstance(obj, (list, tuple)) else [obj]
                    for c in colors:
                        if isinstance(c, str) and c.startswith("#"):
                            assert charts.contrast(c, bg) >= 3.0, (theme, name, attr, c)


def test_latency_axis_starts_below_the_smallest_bar():
    from app import bill_view
    from fastdiff_core import budget

    lat = budget.project_latency(budget.NFEBill(S=1, C=1.0, H=20, P=1, R=1), budget.ProductionModel())  # 200 ms
    fig = bill_view.latency_figure(lat)
    lo, hi = fig.layout.xaxis.range
    assert 10 ** lo < 10 and 10 ** hi > 200  # the 10 ms frame bar and the 200 ms cycle both inside, not at the edge


def test_images_are_drawn_as_one_mosaic_with_the_tail_framed():
    cols = ["label"] + [f"p{i}" for i in range(64)]
    rows = [[float(k % 3)] + [(-1.0 if (i + k) % 2 else 1.0) for i in range(64)] for k in range(10)]
    fig = charts.samples_figure(rows, cols, ["0", "4", "7"], "4")
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 1 and len(heat[0].z) == 2 * 9 - 1 and len(heat[0].z[0]) == 8 * 9 - 1
    assert heat[0].z[0][0] == 1.0 and heat[0].z[0][1] == -1.0 and heat[0].z[0][8] is None  # a gap column
    assert heat[0].z[9][0] == rows[8][1]  # image 8 starts the second row
    assert [a.text for a in fig.layout.annotations] == ["0", "4", "7", "0", "4", "7", "0", "4", "7", "0"]
    assert len(fig.layout.shapes) == 3  # the three images labelled "4"
