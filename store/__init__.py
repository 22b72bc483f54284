"""The experiment store: every run's spec and result, durable, shared by many processes, read as polars.

Imports no torch. The dashboard reads it like this::

    from store import Store
    s = Store()                       # root: $FASTDIFF_HOME/store (default ./var/store)

    s.experiments(search=None, columns=None) -> pl.DataFrame, newest first: exp_id, name, created, spec (JSON of
                                         the base RunSpec), sweep_id, n_runs, imported_from, regime, world,
                                         sampler (the base spec's), status
                                         (empty|queued|running|done|failed|cancelled), n_done, n_failed,
                                         n_cancelled, n_queued (``columns``: only those; without spec,
                                         nothing is read from a file)
    s.experiment(exp_id)              -> dict {exp_id, name, created, run_ids, spec, sweep, imported_from} | None
    s.runs(exp_id=None, run_ids=None, status=None, columns=None)
                                      -> pl.DataFrame, one row per run (only ``columns`` when given, only
                                         runs of ``status`` when given): run_id, exp_id, idx, name, world,
                                         scene, sampler, solver, student, grid, steps, guidance_scale,
                                         horizon, plans, futures, samples, seed, dtype, regime, spec (JSON),
                                         submitted, status (queued|done|failed|cancelled), finished, device,
                                         worker, wall_s, nfe_counted, nfe_formula, verdict (JSON), error,
                                         model, model_checksum
    s.run(run_id)                     -> dict {run_id, exp_id, idx, spec (RunSpec dict), submitted, status,
                                         result (RunResult dict, incl. samples) | None, error, worker,
                                         finished} | None
    s.run_columns(run_ids=None)       -> (pl.DataFrame by run_id, metric names): the runs table's per-run
                                         columns (spec fields, metrics, tail rate, verdicts; store.run_columns),
                                         derived once when a run is compacted
    s.metrics(run_ids)                -> pl.DataFrame long: run_id, name, value
    s.histograms(run_ids)             -> pl.DataFrame: run_id, group, label, count, n, rate, lo, hi, truth
    s.latency(run_ids)                -> pl.DataFrame: run_id, what, seconds, batch, device
    s.sweeps(exp_id=None)             -> pl.DataFrame: sweep_id, exp_id, axes (JSON {field: [values]}), n_runs
    s.rename_experiment(exp_id, name); s.delete_experiment(exp_id)
    s.set_tags(id, [tags]); s.set_note(id, text)   (id: a run's or an experiment's)
    s.annotations(ids=None)           -> pl.DataFrame: id, tags (list), note, updated (annotated ids only)
    s.export_bundle(exp_id, path)     -> path of a zip (experiment.json + Parquet tables; tags and notes too)
    s.import_bundle(path)             -> new exp_id

Submitting runs goes through ``workers.client.submit`` (it validates, records the experiment here,
then queues). ``create_experiment(name, specs, sweep=None) -> exp_id`` and ``new_experiment(...) ->
(exp_id, run_ids)`` record without queueing; ``record_result`` and ``compact`` belong to the single
collector process. Ids are strings: experiments ``e…``, runs ``r…``. Errors are ValueError naming
the field. Timestamps are naive UTC.

How it is laid out (a journal of sealed lines, Parquet segments appended one per compaction, a
manifest), how many processes share it without waiting on each other, and why nothing is lost or
duplicated, is in ``store.store``'s docstring; ``store.legacy`` migrates a store of the per-record
format when it is opened; ``fastdiff bench store`` measures it (docs/bench-store.md).
"""

from store.records import FINAL_STATUSES, RUN_STATUSES
from store.schema import SCHEMA_VERSION
from store.store import Store, as_specs, default_root

__all__ = ["FINAL_STATUSES", "RUN_STATUSES", "SCHEMA_VERSION", "Store", "as_specs", "default_root"]
