"""Experiments: list, search, rename, delete, re-run from the saved specs, export/import a bundle, share.

The search and the selected experiment live in the URL (``?q=…&sel=ID``) so a refresh keeps them.
"""

from __future__ import annotations

import pathlib
import tempfile

import polars as pl
import streamlit as st

from app import access, connection, report, run_view, runs_view, sweep_view
from app.spec_form import load_spec
from fastdiff_core.spec import RunSpec

st.title("Experiments")
s, why = connection.store()
if s is None:
    connection.empty_state(why)
    st.stop()

st.session_state.setdefault("xp.q", st.query_params.get("q", ""))
c1, c2 = st.columns([3, 1])
c1.text_input("Search (name, id or tag)", key="xp.q", placeholder="e.g. dpmpp, sweep, e1a2…, baseline")
q = st.session_state["xp.q"].strip()
if q:
    st.query_params["q"] = q
elif "q" in st.query_params:
    del st.query_params["q"]
with c2.popover("Import a bundle", icon=":material/upload:"):
    up = st.file_uploader("Bundle (.zip from Export)", type=["zip"], key="xp.import")
    if up is not None and st.button("Import", key="xp.import.go"):
        with tempfile.TemporaryDirectory() as d:
            path = pathlib.Path(d) / up.name
            path.write_bytes(up.getvalue())
            try:
                new_id = s.import_bundle(str(path))
            except ValueError as e:
                st.error(str(e).replace(str(path), up.name))
            else:
                st.query_params["sel"] = new_id
                st.rerun()

exps = s.experiments(columns=["exp_id", "name", "created", "regime", "world", "sampler", "n_runs", "status", "n_done",
                               "n_failed", "n_queued", "imported_from"])
tagged = s.annotations(exps["exp_id"].to_list()).select(pl.col("id").alias("exp_id"), "tags")
exps = exps.join(tagged, on="exp_id", how="left").with_columns(pl.col("tags").fill_null(pl.lit([], pl.List(pl.String))))
if q:  # the name contains it, the id is it, or a tag is it
    exps = exps.filter(pl.col("name").str.to_lowercase().str.contains(q.lower(), literal=True) | (pl.col("exp_id") == q)
                       | pl.col("tags").list.contains(q))
if skipped := s.unreadable():
    st.warning(f"{len(skipped)} stored record(s) could not be read and are not shown (kept on disk unchanged; "
               f"the collector's log names each with its reason): {', '.join(sorted(skipped)[:5])}"
               f"{' ...' if len(skipped) > 5 else ''}", icon=":material/report:")
if exps.height == 0:
    connection.empty_state("No experiments match." if q else
                           "No experiments yet. Queue a run in Explore or a sweep in Sweep; they are listed here.")
    st.stop()
shown = exps.select("name", "exp_id", "tags", "created", "regime", "world", "sampler", "n_runs", "status", "n_done",
                    "n_failed", "n_queued", "imported_from")
event = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="single-row", key="xp.table",
                     column_config={"created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm")})
rows = event.selection.rows if event is not None else []
sel = exps["exp_id"][rows[0]] if rows else connection.url_id("sel", "exp_id")


def _rename_delete(exp: dict, sel: str, a1, a2) -> None:
    with a1.popover("Rename", icon=":material/edit:"):
        new_name = st.text_input("New name", value=exp["name"], key=f"xp.rename.{sel}")
        if st.button("Save name", key=f"xp.rename.go.{sel}"):
            try:
                s.rename_experiment(sel, new_name)
            except ValueError as e:
                st.error(str(e))
            else:
                st.rerun()
    with a2.popover("Delete", icon=":material/delete:"):
        st.markdown(f"Delete **{connection.plain(exp['name'])}** and its {len(exp['run_ids'])} run(s)? "
                    "Share links to it stop working.")
        if st.button("Delete for good", type="primary", key=f"xp.delete.{sel}"):
            s.delete_experiment(sel)
            del st.query_params["sel"]
            st.rerun()


def _rerun(exp: dict, sel: str) -> None:
    """Queue the saved specs again as a new experiment (a sweep as its grid) and open it."""
    cli = connection.client_or_say(st.error)
    if cli is None:
        return
    axes = (exp.get("sweep") or {}).get("axes")
    try:
        if axes:  # the grid again: its first spec with every axis overwritten is the same grid
            new_exp, _ = cli.submit(RunSpec.from_dict(exp["spec"]), f"{exp['name']} (re-run)", sweep=axes)
        else:
            specs = [RunSpec.from_json(t) for t in s.runs(exp_id=sel).sort("idx")["spec"].to_list()]
            new_exp, _ = cli.submit(specs, f"{exp['name']} (re-run)")
    except (ValueError, RuntimeError) as e:
        st.error(str(e))
    else:
        st.query_params["sel"] = new_exp
        st.rerun()


def _export(sel: str, where) -> None:
    with where.popover("Export", icon=":material/download:"):
        st.caption("A zip: the experiment record, its runs with their tags and notes, and its runs, metrics, "
                   "histograms and latencies as Parquet.")
        if st.button("Build bundle", key=f"xp.export.build.{sel}"):
            with tempfile.TemporaryDirectory() as d:
                try:
                    path = s.export_bundle(sel, str(pathlib.Path(d) / f"fastdiff-{sel}.zip"))
                    st.session_state[f"xp.bundle.{sel}"] = pathlib.Path(path).read_bytes()
                except (ValueError, OSError) as e:
                    st.error(str(e))
        if st.session_state.get(f"xp.bundle.{sel}"):
            st.download_button("Download bundle", st.session_state[f"xp.bundle.{sel}"], file_name=f"fastdiff-{sel}.zip",
                               mime="application/zip", key=f"xp.export.{sel}")
        st.caption("A report for design reviews: one self-contained HTML file (configuration, verdicts with their "
                   "numbers, branch rates with intervals, interactive charts, the link back), readable offline.")
        if st.button("Build HTML report", key=f"xp.report.build.{sel}"):
            link = access.absolute(access.share_link(sel), st.context.url)
            st.session_state[f"xp.report.{sel}"] = report.experiment_report(s, sel, link).encode()
        if st.session_state.get(f"xp.report.{sel}"):
            st.download_button("Download HTML report", st.session_state[f"xp.report.{sel}"],
                               file_name=f"fastdiff-{sel}.html", mime="text/html", key=f"xp.report.{sel}.dl")


def show_experiment(sel: str) -> None:
    """The selected experiment: its actions, its tags and note, then its run or its sweep."""
    st.query_params["sel"] = sel
    exp = s.experiment(sel)
    if exp is None:
        st.warning(f"experiment {sel} is not in the store (deleted?)")
        del st.query_params["sel"]
        return
    st.divider()
    st.subheader(f"{connection.plain(exp['name']) or sel}  ·  `{sel}`")
    access.share_panel(sel)
    ann = s.annotations([sel])
    tags, note = (ann["tags"][0].to_list(), ann["note"][0]) if ann.height else ([], "")
    if tags or note:
        st.caption(" · ".join(p for p in (f"Tags: {', '.join(tags)}" if tags else "",
                                          f"Note: {connection.plain(note)}" if note else "") if p))
    a1, a2, a3, a4, a5, a6 = st.columns(6)
    _rename_delete(exp, sel, a1, a2)
    if a3.button("Re-run", icon=":material/replay:", key=f"xp.rerun.{sel}",
                 help="Queue the saved specs again as a new experiment"):
        _rerun(exp, sel)
    _export(sel, a4)
    if a5.button("Edit in Explore", icon=":material/tune:", key=f"xp.edit.{sel}",
                 help="Load the experiment's (first) spec into Explore's form"):
        load_spec("ex", RunSpec.from_dict(exp["spec"], enforce_limits=False))  # the form re-checks
        st.session_state.pop("ex.run_id", None)
        st.switch_page("views/explore.py")
    runs_view.annotate(s, sel, key=f"xp.ann.{sel}", tags=tags, note=note, where=a6)
    if len(exp["run_ids"]) == 1:
        run = s.run(exp["run_ids"][0])
        if run is not None and run["status"] not in connection.FINAL:
            run_view.follow_runs([run["run_id"]], key=f"xp.follow.{sel}")
        elif run is not None:
            run_view.render_run(run, key="xp.run")
    else:
        sweep_view.sweep_results(s, sel, key="xp.sweep")


if not sel:
    st.caption(f"{exps.height} experiment(s). Select one to open, rename, delete, re-run, export, tag or share it.")
    st.subheader("Runs")
    st.caption("Every stored run: a column for every spec field, metric and verdict. Filter, sort, choose columns, "
               "colour by any column, pin a baseline, tag; the link keeps it all.")
    runs = s.runs(columns=runs_view.STORE_COLUMNS)
    runs_view.render(s, runs.filter(pl.col("exp_id").is_in(exps["exp_id"].implode())), key="xp.runs",
                     exp_names=dict(zip(exps["exp_id"], exps["name"])))
else:
    show_experiment(sel)
