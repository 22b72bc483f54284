"""A run's verdicts on screen: the projected and the measured verdict side by side, its branch table
with the world's tail marked, and the one-row summary compare and experiments list.

Everything here reads the verdicts the worker stored (``budget.run_verdicts``); a run stored before
workers judged is judged by the same function over its stored result, never with the form's inputs.
Frames are built by pure functions (tested without a browser); ``render`` only draws them.
"""

from __future__ import annotations

from typing import Any, Mapping

import streamlit as st

from fastdiff_core import budget
from fastdiff_core.budget import Check, Verdict
from fastdiff_core.spec import RunResult

LABEL = {"pass": "PASS", "fail": "FAIL", "undecided": "UNDECIDED", "unmeasured": "NOT YET MEASURED"}


def verdicts_of(result: Mapping[str, Any] | None) -> tuple[Verdict | None, Verdict | None]:
    """(projected, measured) of a stored RunResult dict: the worker's, or for a result stored before
    workers judged, ``budget.result_verdicts`` over that stored result (the same function and inputs)."""
    if not result:
        return None, None
    stored = result.get("verdict")
    if stored and "measured" in stored:
        return budget.stored_verdicts(stored)
    return budget.stored_verdicts(budget.result_verdicts(RunResult.from_dict(result)))


def check_value(c: Check | None) -> str:
    """A check's number as every page prints it."""
    if c is None or c.value is None:
        return ""
    if c.name == "cost":
        return f"${c.value:,.3f}"
    if c.name == "latency":
        v = f"{c.value * 1000:,.1f} ms"
        return v + (f" [{c.lo * 1000:,.1f}, {c.hi * 1000:,.1f}]" if c.lo is not None and c.hi is not None else "")
    if c.name == "coverage":  # the number of branch checks that failed or could not be decided
        return {"fail": f"{c.value:g} failing", "undecided": f"{c.value:g} undecided"}.get(c.status, "")
    return f"{c.value:g}"


def verdict_rows(projected: Verdict | None, measured: Verdict | None) -> list[dict[str, str]]:
    """One row per check: its status and number before the run (projected) and after it (measured),
    and how the measured number was obtained."""
    names = list(dict.fromkeys(c.name for v in (projected, measured) if v for c in v.checks))
    rows = []
    for name in names:
        p = projected.check(name) if projected else None
        m = measured.check(name) if measured else None
        rows.append({"check": name + (" (binding)" if (measured or projected).binding == name else ""),
                     "projected": f"{LABEL[p.status]} {check_value(p)}".strip() if p else "",
                     "measured": f"{LABEL[m.status]} {check_value(m)}".strip() if m else "",
                     "measured how": m.basis if m else ""})
    rows.append({"check": "overall", "projected": LABEL[projected.status] if projected else "",
                 "measured": LABEL[measured.status] if measured else "", "measured how": ""})
    return rows


def tail_row(v: Verdict | None) -> Mapping[str, Any] | None:
    """The verdict's row of the world's tail branch (the first group's when there are several plans)."""
    if v is None or v.tail is None:
        return None
    return next((r for r in v.rates if r.get("label") == v.tail), None)


def rate_text(r: Mapping[str, Any]) -> str:
    """'4.00% [2.89%, 5.45%]': a branch rate with its interval, as every page prints it."""
    return f"{float(r['rate']):.2%} [{float(r['lo']):.2%}, {float(r['hi']):.2%}]"


def summary(projected: Verdict | None, measured: Verdict | None) -> dict[str, str]:
    """The one-row summary of a run's verdicts (compare, experiments): statuses, cost, tail and its rate."""
    v = measured or projected
    if v is None:
        return {"regime": "", "projected": "", "measured": "", "cost": "", "tail": "", "tail rate": ""}
    t = tail_row(measured)
    return {"regime": v.regime, "projected": LABEL[projected.status] if projected else "",
            "measured": LABEL[measured.status] if measured else "",
            "cost": check_value(v.check("cost")), "tail": v.tail or "", "tail rate": rate_text(t) if t else ""}


def branch_rows(histograms: list[Mapping[str, Any]], tail: str | None) -> list[dict[str, Any]]:
    """The branch table: every histogram row, the world's declared tail marked, truth and whether the
    truth lies inside the row's interval."""
    out = []
    for r in histograms:
        truth = r.get("truth")
        inside = truth is None or float(r["lo"]) - 1e-12 <= float(truth) <= float(r["hi"]) + 1e-12
        out.append({"group": r.get("group"), "branch": r["label"] + (" (tail)" if r["label"] == tail else ""),
                    "count": int(r["count"]), "n": int(r["n"]), "rate": f"{float(r['rate']):.2%}",
                    "95% interval": f"[{float(r['lo']):.2%}, {float(r['hi']):.2%}]",
                    "truth": f"{float(truth):.2%}" if truth is not None else "", "inside": "yes" if inside else "NO"})
    return out


def card(v: Verdict, *, heading: str) -> None:
    """Status box, binding constraint, the quotable sentence."""
    box = {"pass": st.success, "fail": st.error, "undecided": st.warning, "unmeasured": st.info}[v.status]
    box(f"**{heading}: {LABEL[v.status]}** — binding constraint: **{v.binding}**\n\n{v.sentence}")


def render(projected: Verdict | None, measured: Verdict | None) -> None:
    """The run's verdict (measured), the table of both, and what they were judged at."""
    if measured is not None:
        card(measured, heading=f"Measured verdict — {measured.regime}")
    if projected is not None or measured is not None:
        st.table(verdict_rows(projected, measured))  # a DOM table: readable by screen readers and tests
        v = measured or projected
        st.caption(f"Both verdicts come from one function over this run's spec at the regime's production model "
                   f"({v.model}); the measured one replaces the bill by the counted NFE, adds the run's branch "
                   f"rates and, where the run timed cycles repeatedly, its latency on the worker. Tail: "
                   f"**{v.tail}**.")
