"""The dashboard's one door to the store (reads) and the service's submission client (queue, cancel).

Both are created once per server process (``st.cache_resource``). When either is unavailable —
the service not started, the broker down — the functions return ``None`` together with the reason,
and pages show that reason as an empty state instead of failing.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
import uuid
from typing import Any

import polars as pl
import streamlit as st

from fastdiff_core import budget
from fastdiff_core.spec import RunSpec

FINAL = ("done", "failed", "cancelled")


@st.cache_resource(show_spinner=False)
def _store() -> Any:
    from store import Store

    return Store()


@st.cache_resource(show_spinner=False)
def _client() -> Any:
    from workers.client import ServiceClient

    return ServiceClient()


def logged_error(doing: str) -> str:
    """Print the current exception's traceback to the server's log under a short error id; return the id.
    Pages show the id, never the traceback or the server's paths (docs/security.md)."""
    error_id = uuid.uuid4().hex[:8]
    print(f"dashboard: error {error_id} {doing}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    return error_id


def store() -> tuple[Any | None, str | None]:
    """(Store, None) or (None, why not)."""
    try:
        return _store(), None
    except Exception as e:  # noqa: BLE001 - any failure to open the store is shown to the user
        error_id = logged_error("opening the store")
        return None, f"The experiment store is not available ({type(e).__name__}; error id `{error_id}` in the log)."


def client() -> tuple[Any | None, str | None]:
    """(ServiceClient, None) or (None, why not). Needs the broker that `fastdiff up` starts."""
    try:
        return _client(), None
    except Exception as e:  # noqa: BLE001
        error_id = logged_error("connecting to the run queue")
        return None, (f"The run queue is not reachable ({type(e).__name__}; error id `{error_id}` in the log). "
                      "Start the dashboard with its workers: `./dev up` (or `fastdiff up`).")


def client_or_say(say: Any = None) -> Any | None:
    """The ServiceClient, or None after ``say`` (default ``st.warning``) has told the user why not."""
    cli, why = client()
    if cli is None:
        (say or st.warning)(why)
    return cli


# Every ASCII character Streamlit's markdown gives a meaning (CommonMark, GFM, its :directives:, $math$).
_MARKDOWN = frozenset("\\`*_{}[]()<>#+-.!|~:$=\"'&")


def plain(text: str) -> str:
    """``text`` (an experiment or run name: user input) escaped so markdown shows it as typed: an image
    or a link in a name stays text, and no viewer's browser fetches anything because of it."""
    return "".join("\\" + c if c in _MARKDOWN else c for c in str(text)).replace("\n", " ")


def error_headline(error: Any) -> str:
    """A stored run error as a page shows it: the message, never the worker's traceback (docs/security.md;
    the full text stays in the run's record). Workers store "Type: message" then the traceback."""
    lines = [ln for ln in str(error).strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    head = lines[0] if not lines[0].startswith("Traceback") else lines[-1]
    return plain(head[:500])


def url_id(param: str, field: str) -> str | None:
    """The id in URL parameter ``param`` if it is a valid ``field`` ('exp_id', 'run_id'); otherwise None,
    after saying so and dropping the parameter (a hand-edited or truncated link)."""
    from store import ids

    value = st.query_params.get(param)
    if value is None or ids.is_id(value, field):
        return value
    st.warning(f"{param}={plain(ids.shown(value))} in the link is not a valid {field.split('_')[0]} id; ignored.")
    del st.query_params[param]
    return None


def in_flight(run_id: str | None) -> str | None:
    """``run_id`` if that run is queued or running (by the store's record), else None."""
    if not run_id:
        return None
    s, _ = store()
    run = s.run(run_id) if s is not None else None
    return run_id if run is not None and run["status"] not in FINAL else None


def stored_final(run_ids: list[str] | tuple[str, ...]) -> bool:
    """Whether the store has recorded a final status for every run (the pages draw from the store)."""
    s, _ = store()
    if s is None:
        return True  # nothing to wait for: the page says the store is unavailable
    runs = s.runs(run_ids=list(run_ids))
    return runs.height == len(run_ids) and all(st_ in FINAL for st_ in runs["status"].to_list())


def empty_state(message: str) -> None:
    st.info(message, icon=":material/inbox:")


@functools.lru_cache(maxsize=8192)
def stored_spec(text: str) -> RunSpec:
    """A stored run's spec (its JSON text as the store keeps it), parsed once per server process: a
    RunSpec is frozen, and pages that read every run of a sweep parse the same texts on every rerun.
    Not checked against the server-side limits (a stored run, not a new one); ValueError if unreadable."""
    return RunSpec.from_json(text, enforce_limits=False)


def runtime_rows(runs: pl.DataFrame, threads: dict[str, float], cycles: dict[str, float] | None = None,
                 setup: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Done runs as the run-time model reads them: run id, kind (world, network), device, threads, NFE per run,
    rollouts, wall seconds and the seconds of it spent loading networks, newest last. ``threads``: run_id -> the threads metric it
    ran with; ``cycles``: run_id -> the cycles it drew (a sequential gate's; others drew ``samples``);
    ``setup``: run_id -> its ``setup_s`` metric (None for a run stored before it existed)."""
    out = []
    for r in runs.iter_rows(named=True):
        if r["status"] != "done" or not r["wall_s"] or not r["nfe_counted"]:
            continue
        try:
            spec = stored_spec(r["spec"])
        except ValueError:
            continue
        drawn = (cycles or {}).get(r["run_id"])
        try:
            per_cycle = budget.counted_per_cycle(spec, float(r["nfe_counted"]), float(r["nfe_formula"] or 0.0), drawn)
            billed = budget.work_of(spec, budget.bill_for(spec, guided_fraction=0.5), drawn)
        except ValueError:
            continue
        work = budget.Work(per_cycle * (drawn or spec.samples), billed.rollouts, billed.forwards)
        out.append({"run_id": r["run_id"], "kind": budget.runtime_kind(spec), "device": r["device"],
                    "threads": threads.get(r["run_id"]), "work": work, "seconds": float(r["wall_s"]),
                    "setup_s": (setup or {}).get(r["run_id"])})
    return out


MAX_FIT_RUNS = 40  # the newest runs of a kind: the machine's load drifts, old runs say less
MAX_SCAN_RUNS = 2_000  # the newest done runs of a world read to find them (not all of a large store's)


def estimate_from(rows: list[dict[str, Any]], spec: RunSpec, bill: budget.NFEBill) -> budget.RuntimeEstimate:
    """The run time of ``spec`` from stored runs of its kind on the device and threads of the newest
    such run (the workers' current machine), else the world's conservative prior."""
    kind = budget.runtime_kind(spec)
    same = [r for r in rows if r["kind"] == kind]
    work = budget.work_of(spec, bill)
    prior = budget.runtime_prior(spec.world)
    if not same:
        return prior.estimate(work)
    device, threads = same[-1]["device"], same[-1]["threads"]
    fit = [r for r in same if r["device"] == device and r["threads"] == threads][-MAX_FIT_RUNS:]
    where = f"{kind[0]} · {kind[1]} on {device}" + (f", {threads:g} threads" if threads else "")
    timed = [(r["work"], r["seconds"], r.get("setup_s")) for r in fit]
    return budget.fit_runtime(timed, where, prior).estimate(work)


@st.cache_resource(show_spinner=False)
def _runtime_rows_seen() -> dict[str, dict[str, dict[str, Any] | None]]:
    """world -> run_id -> that done run's ``runtime_rows`` row (None: the model cannot read it). A done
    run's spec, wall time and metrics never change, so each is parsed once per server process, not on
    every keystroke of the form (the run-time estimate beside Run)."""
    return {}


def stored_runtime_rows(world: str) -> list[dict[str, Any]]:
    """``runtime_rows`` of the store's newest done runs of ``world`` (empty when the store is unavailable);
    runs read before come from ``_runtime_rows_seen``, only new ones are read and parsed."""
    s, _ = store()
    if s is None:
        return []
    try:
        newest = s.runs(status="done", columns=["run_id", "world"]).filter(pl.col("world") == world)
        wanted = newest["run_id"].tail(MAX_SCAN_RUNS).to_list()
        seen = _runtime_rows_seen().setdefault(world, {})
        missing = [r for r in wanted if r not in seen]
        if missing:
            runs = s.runs(run_ids=missing,
                          columns=["run_id", "spec", "status", "device", "wall_s", "nfe_counted", "nfe_formula"])
            m = s.metrics(runs["run_id"].to_list())
            threads, cycles, setup = (dict(zip(f["run_id"].to_list(), f["value"].to_list()))
                                      for f in (m.filter(pl.col("name") == n) for n in ("threads", "cycles", "setup_s")))
            rows = runtime_rows(runs, threads, cycles, setup)
            fresh: dict[str, dict[str, Any] | None] = dict.fromkeys(missing)
            fresh.update({r["run_id"]: r for r in rows})
            kept = set(wanted)  # runs no longer among the newest (or deleted) leave the cache
            _runtime_rows_seen()[world] = seen = {k: v for k, v in {**seen, **fresh}.items() if k in kept}
        return [seen[r] for r in wanted if seen.get(r) is not None]
    except Exception:  # noqa: BLE001 - an unreadable store leaves the conservative prior, said so
        return []


def runtime_estimate(spec: RunSpec, bill: budget.NFEBill,
                     rows: list[dict[str, Any]] | None = None) -> budget.RuntimeEstimate:
    """The estimate Explore and Sweep show and the run guard uses: ``estimate_from`` over the store's
    runs of the spec's world (``rows``: already read, for a sweep's many specs)."""
    return estimate_from(stored_runtime_rows(spec.world) if rows is None else rows, spec, bill)


def sum_estimates(estimates: list[budget.RuntimeEstimate]) -> budget.RuntimeEstimate:
    """A sweep's total: the sum of its runs' estimates and of their interval ends (runs queue one after
    another on one worker; summing the ends is the conservative interval)."""
    prior = any(e.prior for e in estimates)
    sources = sorted({e.source for e in estimates})
    return budget.RuntimeEstimate(sum(e.seconds for e in estimates), sum(e.lo for e in estimates),
                                  sum(e.hi for e in estimates), "; ".join(sources), prior,
                                  max((e.setup_s for e in estimates), default=0.0),
                                  max((e.setup_nfe for e in estimates), default=0.0))


def parse_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return None
