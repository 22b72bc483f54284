"""The dashboard's figure builders: Pareto frontier, histogram tail, rollout lines."""

from app import charts


def test_pareto_front_minimise_and_maximise():
    pts = [(4, 0.02), (8, 0.01), (8, 0.03), (16, 0.01), (2, 0.05), (32, 0.0)]
    assert [pts[i] for i in charts.pareto_front(pts)] == [(2, 0.05), (4, 0.02), (8, 0.01), (32, 0.0)]
    rec = [(4, 0.5), (8, 0.7), (16, 0.6), (32, 0.9)]
    assert [rec[i] for i in charts.pareto_front(rec, maximize_y=True)] == [(4, 0.5), (8, 0.7), (32, 0.9)]


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
