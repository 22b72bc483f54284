"""The runs table: one row per stored run, a column for every spec field, every metric and every verdict.

The columns are derived from the data, not listed by hand (``store.run_columns``: a spec's fields, the
metrics its result reported, the world's tail rate with its interval and ``tail_rate_error``, the
verdicts' statuses), once per run when the store compacts it (``Store.run_columns`` reads them).

On top: filters (``steps>=10; solver=euler,heun; name~dpm``), a sort, the chosen columns, a column to
colour rows and points by, tags (any of), and a pinned baseline run whose values every row is
compared with: ``Δ m`` for each numeric metric, and for a metric that carries an interval (``m_lo``,
``m_hi``) the interval of the difference (``difference_interval``). Without an interval no row is
called higher or lower than the baseline.

Pure functions build the frame (tests/test_app_runs_table.py); ``TableState`` is what the URL keeps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from fastdiff_core.metrics.intervals import difference_interval
from store.run_columns import RUN_COLUMNS

FIRST_METRICS = ("tail_rate_error", "tail_rate", "mode_tv", "tv", "rmse", "recall", "precision", "coverage")
DELTA = "Δ "
LO, HI = "_lo", "_hi"
OPS = ("!=", ">=", "<=", "=", ">", "<", "~")  # two-character operators first: they contain one-character ones
FILTER = re.compile(r"\s*(?P<col>[^=!<>~]+?)\s*(?P<op>!=|>=|<=|=|>|<|~)\s*(?P<value>.*?)\s*")


def build(runs: pl.DataFrame, results: pl.DataFrame, exp_names: Mapping[str, str],
          annotations: pl.DataFrame) -> pl.DataFrame:
    """The table: the run's own columns (RUN_COLUMNS), then ``results`` (``result_columns``) and the
    run's tags and note (``Store.annotations``)."""
    ann = annotations.select(pl.col("id").alias("run_id"), "tags", "note")
    base = runs.select("run_id", pl.col("exp_id").replace_strict(dict(exp_names), default="").alias("experiment"),
                       "status", "device", "wall_s", "nfe_counted", "submitted")
    out = base.join(ann, on="run_id", how="left").with_columns(
        pl.col("tags").fill_null(pl.lit([], dtype=pl.List(pl.String))), pl.col("note").fill_null(""))
    return out.select(RUN_COLUMNS).join(results, on="run_id", how="left", coalesce=True)


# ------------------------------------------------------------------------------------------------
# the table's state (what the URL keeps) and what it does to the frame
# ------------------------------------------------------------------------------------------------

PARAMS = ("filter", "sort", "cols", "color", "base", "tag")


@dataclass(frozen=True)
class TableState:
    """Filter text, sort (column, descending), chosen columns (None: the default), colour column,
    baseline run id and tags (a run with any of them is shown)."""

    filter: str = ""
    sort: tuple[str, bool] | None = None
    cols: tuple[str, ...] | None = None
    color: str | None = None
    base: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> TableState:
        sort = params.get("sort") or None
        cols = params.get("cols")
        return cls(filter=params.get("filter", ""),
                   sort=(sort.lstrip("-"), sort.startswith("-")) if sort else None,
                   cols=tuple(c for c in cols.split(",") if c) if cols else None,
                   color=params.get("color") or None, base=params.get("base") or None,
                   tags=tuple(t for t in params.get("tag", "").split(",") if t))

    def to_params(self) -> dict[str, str]:
        """The URL parameters of this state; a parameter at its default is left out."""
        out = {"filter": self.filter.strip(), "sort": (("-" if self.sort[1] else "") + self.sort[0]) if self.sort else "",
               "cols": ",".join(self.cols) if self.cols is not None else "", "color": self.color or "",
               "base": self.base or "", "tag": ",".join(self.tags)}
        return {k: v for k, v in out.items() if v}

    def checked(self, columns: Sequence[str], run_ids: Sequence[str]) -> tuple[TableState, list[str]]:
        """This state with every part that names a column or run the table does not have dropped, and
        a message per dropped part naming it (a link from another store, a metric no run reports)."""
        msgs, known, st = [], set(columns), self
        if st.sort and st.sort[0] not in known:
            msgs.append(f"sort={st.sort[0]!r} is not a column of this table; the table is not sorted.")
            st = replace(st, sort=None)
        if st.cols is not None and (unknown := [c for c in st.cols if c not in known]):
            msgs.append(f"cols: {', '.join(map(repr, unknown))} not columns of this table; not shown.")
            st = replace(st, cols=tuple(c for c in st.cols if c in known))
        if st.color and st.color not in known:
            msgs.append(f"color={st.color!r} is not a column of this table; rows are not coloured.")
            st = replace(st, color=None)
        if st.base and st.base not in set(run_ids):
            msgs.append(f"base={st.base!r} is not a run of this table; no baseline is pinned.")
            st = replace(st, base=None)
        return st, msgs


@dataclass(frozen=True)
class Filter:
    column: str
    op: str
    value: str


def parse_filters(text: str, columns: Sequence[str]) -> list[Filter]:
    """``steps>=10; solver=euler,heun; name~dpm`` -> filters (all must hold). ``=`` and ``!=`` take a
    comma-separated list; ``~`` is a case-insensitive substring. ValueError naming the clause."""
    out = []
    for clause in (c for c in text.split(";") if c.strip()):
        m = FILTER.fullmatch(clause)
        if m is None or not m["value"]:
            raise ValueError(f"filter {clause.strip()!r} is not 'column op value' with op one of {' '.join(OPS)} "
                             "(e.g. steps>=10; solver=euler,heun; name~dpm)")
        if m["col"] not in columns:
            raise ValueError(f"filter {clause.strip()!r}: {m['col']!r} is not a column of this table")
        out.append(Filter(m["col"], m["op"], m["value"]))
    return out


def _number(f: Filter) -> float:
    try:
        x = float(f.value)
    except ValueError:
        raise ValueError(f"filter '{f.column}{f.op}{f.value}': {f.value!r} is not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"filter '{f.column}{f.op}{f.value}': {f.value!r} is not a finite number")
    return x


def _expr(f: Filter, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(f.column)
    if isinstance(dtype, pl.List):
        col = col.list.join(",")
    if f.op == "~":
        return col.cast(pl.String).str.to_lowercase().str.contains(f.value.lower(), literal=True)
    if dtype.is_numeric():
        if f.op in ("=", "!="):
            values = [_number(Filter(f.column, f.op, v.strip())) for v in f.value.split(",")]
            return col.is_in(values) if f.op == "=" else ~col.is_in(values)
        x = _number(f)
        return {">": col > x, ">=": col >= x, "<": col < x, "<=": col <= x}[f.op]
    text = col.cast(pl.String)
    if f.op in ("=", "!="):
        values = [v.strip() for v in f.value.split(",")]
        return text.is_in(values) if f.op == "=" else ~text.is_in(values)
    return {">": text > f.value, ">=": text >= f.value, "<": text < f.value, "<=": text <= f.value}[f.op]


def apply(frame: pl.DataFrame, state: TableState) -> pl.DataFrame:
    """The rows the state shows (filters, tags), in its order."""
    for f in parse_filters(state.filter, frame.columns):
        frame = frame.filter(_expr(f, frame.schema[f.column]).fill_null(False))
    if state.tags:
        frame = frame.filter(pl.col("tags").list.eval(pl.element().is_in(list(state.tags))).list.any())
    if state.sort:
        frame = frame.sort(state.sort[0], descending=state.sort[1], nulls_last=True, maintain_order=True)
    return frame


def numeric_metrics(frame: pl.DataFrame, spec_and_run: Sequence[str]) -> list[str]:
    """The numeric result columns (metrics, tail rate): what a baseline is compared on."""
    skip = set(spec_and_run) | {"wall_s", "nfe_counted"}
    return [c for c, t in frame.schema.items() if t.is_numeric() and c not in skip and not c.endswith((LO, HI))]


def with_baseline(frame: pl.DataFrame, base: str, metrics: Sequence[str]) -> pl.DataFrame:
    """``frame`` with ``Δ m`` = m - m(baseline) for each metric, and for a metric with ``m_lo``/``m_hi``
    the 95% interval of that difference (``Δ m_lo``, ``Δ m_hi``) and ``m vs baseline``: 'higher' or
    'lower' only when the interval excludes 0, else 'no difference shown'."""
    row = frame.filter(pl.col("run_id") == base)
    if row.height != 1:
        raise ValueError(f"base={base!r} is not a run of this table")
    b = row.row(0, named=True)
    out = []
    for m in metrics:
        if b.get(m) is None or (m.endswith((LO, HI)) and m[:-len(LO)] in frame.columns):
            continue  # no value to compare with, or an interval's end (compared as part of its metric)
        if m + LO in frame.columns and m + HI in frame.columns and b.get(m + LO) is not None:
            d, lo, hi = difference_interval(frame[m].to_numpy(), frame[m + LO].to_numpy(), frame[m + HI].to_numpy(),
                                            b[m], b[m + LO], b[m + HI])
            words = ["" if math.isnan(x) or math.isnan(y) else "higher" if x > 0 else "lower" if y < 0
                     else "no difference shown" for x, y in zip(lo, hi)]
            out += [pl.Series(DELTA + m, d), pl.Series(DELTA + m + LO, lo), pl.Series(DELTA + m + HI, hi),
                    pl.Series(f"{m} vs baseline", words, dtype=pl.String)]
        else:
            out.append((pl.col(m) - b[m]).alias(DELTA + m))
    return frame.with_columns(out).with_columns(pl.col(pl.Float64).fill_nan(None))


def with_delta_columns(chosen: Sequence[str], columns: Sequence[str]) -> list[str]:
    """``chosen`` with each metric's baseline columns (``Δ m``, its interval, ``m vs baseline``) after it."""
    out = []
    for c in chosen:
        out.append(c)
        out += [d for d in (DELTA + c, DELTA + c + LO, DELTA + c + HI, f"{c} vs baseline") if d in columns]
    return out


def default_columns(frame: pl.DataFrame, spec_columns: Sequence[str], metrics: Sequence[str]) -> list[str]:
    """What the table shows before anyone chooses: the run's own columns, the spec fields that differ
    between the rows, the verdicts, and every metric (the usual error metrics first; without the ends of
    intervals)."""
    varying = [c for c in spec_columns if c in frame.columns and frame[c].n_unique() > 1]
    verdicts = [c for c in frame.columns if c.startswith("verdict")]
    first = [m for m in FIRST_METRICS if m in metrics]
    rest = sorted(m for m in metrics if m not in first and not m.endswith((LO, HI)))
    return [*RUN_COLUMNS[:5], *varying, *verdicts, *first, *rest]


def colour_groups(frame: pl.DataFrame, column: str, bins: int = 5) -> list[str]:
    """The group of each row for colouring by ``column``: its value, or for a numeric column with more
    than ``bins`` values, its quantile bin as a range ('0.012-0.034')."""
    s = frame[column]
    if isinstance(s.dtype, pl.List):
        return [",".join(v) if v else "(none)" for v in s.to_list()]
    if s.dtype.is_numeric() and s.n_unique() > bins:
        values = s.cast(pl.Float64).to_numpy()
        finite = values[np.isfinite(values)]
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1))) if finite.size else np.array([0.0])
        out = []
        for v in values:
            if not math.isfinite(v):
                out.append("(none)")
                continue
            i = int(np.clip(np.searchsorted(edges, v, side="left") - 1, 0, max(len(edges) - 2, 0)))
            out.append(f"{edges[i]:.3g}–{edges[min(i + 1, len(edges) - 1)]:.3g}")
        return out
    return ["(none)" if v is None else str(v) for v in s.to_list()]
