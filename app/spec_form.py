"""The RunSpec form shared by Explore and Sweep: widgets -> a validated RunSpec (or the error).

Widget state lives in ``st.session_state`` under ``{prefix}.{field}``; the non-default values are
mirrored into the URL's query parameters so a browser refresh restores the form (query parameters
are cleared on page switch, session state carries the form across pages).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import streamlit as st

from app.connection import plain
from app.form_fields import FIELDS, MAX_NAME, Field, check_value, url_values
from fastdiff_core import budget, catalog
from fastdiff_core.models.model_registry import model_names
from fastdiff_core.spec import FIELDS as SPEC_FIELDS
from fastdiff_core.spec import MODEL_WORLD, RunSpec, field_choices
from fastdiff_core.worlds import world_plugin

FORM_DEFAULTS: dict[str, Any] = {name: f.default for name, f in FIELDS.items()}


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}"


def init_state(prefix: str) -> None:
    """Fill defaults once per session, then let the URL's query parameters override them. A value in
    the link that the field does not allow is refused (``refusals``), never coerced: the field keeps
    its default and the page says which value was refused and what is allowed."""
    flag = _key(prefix, "_init")
    if st.session_state.get(flag):
        return
    for name, value in FORM_DEFAULTS.items():
        st.session_state.setdefault(_key(prefix, name), value)
    params = {name: raw for name, raw in st.query_params.items()}
    values, refused = url_values(params)
    for name, value in values.items():
        st.session_state[_key(prefix, name)] = value
    if "parallelism" not in values:  # the regime's production model, as its verdicts state it
        st.session_state[_key(prefix, "parallelism")] = _lanes(st.session_state[_key(prefix, "regime")])
    solver = st.session_state[_key(prefix, "solver")]
    options = catalog.SOLVERS[solver].options if solver in catalog.SOLVERS else {}
    for name, raw in params.items():
        if not name.startswith(_OPT):
            continue
        opt = options.get(name[len(_OPT):])
        if opt is None:
            refused.append(f"{name}={raw!r} in the link is not allowed: solver {solver!r} has no option "
                           f"{name[len(_OPT):]!r}" + (f"; its options: {sorted(options)}" if options else ""))
            continue
        try:
            st.session_state[_option_key(prefix, solver, name[len(_OPT):])] = check_value(name, opt, raw)
        except ValueError as e:
            refused.append(str(e))
    st.session_state[_key(prefix, "_refused")] = refused
    st.session_state[flag] = True


def refusals(prefix: str) -> list[str]:
    """The link's values that ``init_state`` refused (empty once the user dismissed them)."""
    return list(st.session_state.get(_key(prefix, "_refused")) or [])


def _dismiss_refusals(prefix: str) -> None:
    st.session_state[_key(prefix, "_refused")] = []


def refusal_notice(prefix: str) -> None:
    """The refused link values, each named with what is allowed, and a button to go on without them."""
    refused = refusals(prefix)
    if not refused:
        return
    st.error("This link asked for values the form does not allow; they were not applied:\n\n"
             + "\n".join(f"- {plain(r)}" for r in refused)
             + "\n\nThe fields keep their defaults; nothing is run or projected from them until you confirm.",
             icon=":material/link_off:")
    st.button("Continue with the form's values", key=_key(prefix, "refused.ok"), on_click=_dismiss_refusals,
              args=(prefix,))


_OPT = "opt."  # query parameters of the chosen solver's options: opt.eta=0.5


def _option_key(prefix: str, solver: str, name: str) -> str:
    """Each solver keeps its own option values, so switching solvers and back keeps them."""
    return _key(prefix, f"{_OPT}{solver}.{name}")


def _to_url(v: Any) -> str:
    """A form value as a query parameter: None -> '', booleans -> '1' / '0'."""
    return "" if v is None else (("1" if v else "0") if isinstance(v, bool) else str(v))


def _lanes(regime: str) -> int:
    """The parallel lanes of the regime's production model (``budget.production_model``)."""
    return budget.production_model(regime if regime in budget.REGIME_BUDGETS else "offline").parallelism


def load_spec(prefix: str, spec: RunSpec) -> None:
    """Put a stored spec into the form (re-run, open-in-Explore, a ``?run=`` link), with the production
    model its verdicts were stated at."""
    s = st.session_state
    s[_key(prefix, "_init")] = True
    for name, value in FORM_DEFAULTS.items():
        s[_key(prefix, name)] = value
    for name in ("sampler", "solver", "grid", "student", "steps", "guidance_scale", "horizon", "plans",
                 "futures", "world", "scene", "model", "seed", "samples", "name", "gate_alpha"):
        s[_key(prefix, name)] = getattr(spec, name)
    s[_key(prefix, "gate_cap")] = spec.gate_cap or 0
    s[_key(prefix, "regime")] = spec.regime or "offline"
    s[_key(prefix, "parallelism")] = _lanes(spec.regime or "offline")
    if spec.solver in catalog.SOLVERS:
        for name, opt in catalog.SOLVERS[spec.solver].options.items():
            s[_option_key(prefix, spec.solver, name)] = spec.solver_options.get(name, opt.default)
    for name in ("preset", "path", "prediction", "condition"):
        if name in spec.world_options:
            s[_key(prefix, name)] = spec.world_options[name]
    for name in [*catalog.SPEEDUPS, *_SPEEDUP_FLAGS]:
        s[_key(prefix, name)] = getattr(spec, name)
    if spec.guidance_interval is not None:
        s[_key(prefix, "interval_on")] = True
        s[_key(prefix, "interval_lo")], s[_key(prefix, "interval_hi")] = spec.guidance_interval
    s[_key(prefix, "_regime_was")], s[_key(prefix, "_world_was")] = spec.regime or "offline", spec.world
    s[_key(prefix, "_refused")] = []
    s.pop(_key(prefix, "_changed"), None)


def sync_query_params(prefix: str) -> None:
    """Mirror non-default form values into the URL so that a refresh restores them."""
    wanted = {}
    for name, default in FORM_DEFAULTS.items():
        if name == "parallelism":
            default = _lanes(st.session_state.get(_key(prefix, "regime"), "offline"))
        v = st.session_state.get(_key(prefix, name), default)
        if v != default:
            wanted[name] = _to_url(v)
    s = st.session_state
    solver = s.get(_key(prefix, "solver"))
    if s.get(_key(prefix, "sampler")) == "solver" and solver in catalog.SOLVERS:
        for name, opt in catalog.SOLVERS[solver].options.items():
            v = s.get(_option_key(prefix, solver, name), opt.default)
            if v != opt.default:
                wanted[_OPT + name] = _to_url(v)
    current = {k: v for k, v in st.query_params.items() if k in FORM_DEFAULTS or k.startswith(_OPT)}
    if current != wanted:
        for k in set(current) - set(wanted):
            del st.query_params[k]
        st.query_params.update(wanted)


# what a world without the capability takes
ONE = {"horizon": 1, "plans": 1, "futures": 1, "guidance_scale": 1.0, "gate_cap": 0,
       "gate_alpha": SPEC_FIELDS["gate_alpha"].default}


def unsupported(world: str) -> dict[str, str]:
    """The form fields ``world`` does not take, each with the reason shown beside the disabled widget."""
    plugin = world_plugin(world)
    cap, title = plugin.capabilities, plugin.info.title
    why = f" ({cap.why})" if cap.why else ""
    out = {}
    if not cap.rollouts:
        out["horizon"] = out["futures"] = f"{title} has no rollouts{why}: only 1."
    if not cap.fan_out:
        out["plans"] = f"{title} has no candidate plans{why}: only 1."
    if not cap.guidance:
        out["guidance_scale"] = f"{title} takes no guidance{why}: only 1."
    if not cap.coverage_gate:
        out["gate_cap"] = out["gate_alpha"] = f"{title} has no sequential coverage gate: one fixed sample."
    return out


def regime_values(regime: str, world: str) -> dict[str, Any]:
    """What choosing ``regime`` sets in the form: its defaults (catalog.REGIMES) and its production model's
    lanes; fields the world does not take stay at 1."""
    values: dict[str, Any] = {n: FORM_DEFAULTS[n] for n in ("horizon", "plans", "futures")}
    values.update(catalog.REGIMES[regime].defaults)
    values["parallelism"] = _lanes(regime)
    for name in unsupported(world):
        values[name] = ONE[name]
    return {k: v for k, v in values.items() if k in FORM_DEFAULTS}


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The fields whose value ``after`` changes: name -> (old, new)."""
    return {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}


def describe_changes(what: str, changed: Mapping[str, tuple[Any, Any]]) -> str:
    """'Regime set to X: Steps 20 -> 4, Horizon H (frames) 1 -> 12.' (or that nothing else changed)."""
    if not changed:
        return f"{what}; no other field changed."
    parts = [f"{FIELDS[k].label} {old:g} → {new:g}" if isinstance(new, float) and isinstance(old, (int, float))
             else f"{FIELDS[k].label} {old} → {new}" for k, (old, new) in changed.items()]
    return f"{what}: " + ", ".join(parts) + "."


def _set_with_undo(prefix: str, what: str, values: Mapping[str, Any], undo_extra: Mapping[str, Any]) -> None:
    """Set ``values`` in the form and remember how to undo it (the notice ``change_notice`` shows)."""
    s = st.session_state
    before = {k: s.get(_key(prefix, k)) for k in values}
    changed = changes(before, values)
    for name, value in values.items():
        s[_key(prefix, name)] = value
    s[_key(prefix, "_changed")] = {"text": describe_changes(what, changed),
                                   "undo": {**{k: old for k, (old, _) in changed.items()}, **undo_extra}}


def _apply_regime(prefix: str) -> None:
    s = st.session_state
    regime, previous = s[_key(prefix, "regime")], s.get(_key(prefix, "_regime_was"), "offline")
    s[_key(prefix, "_regime_was")] = regime
    _set_with_undo(prefix, f"Regime set to {catalog.REGIMES[regime].title}",
                   regime_values(regime, s[_key(prefix, "world")]), {"regime": previous, "_regime_was": previous})


def _apply_world(prefix: str) -> None:
    s = st.session_state
    world, previous = s[_key(prefix, "world")], s.get(_key(prefix, "_world_was"), FORM_DEFAULTS["world"])
    s[_key(prefix, "_world_was")] = world
    from_regime = regime_values(s[_key(prefix, "regime")], world)  # H, P, R as the regime has them (or 1)
    resets = {**{n: from_regime[n] for n in ("horizon", "plans", "futures")},
              **{name: ONE[name] for name in unsupported(world)}}
    _set_with_undo(prefix, f"World set to {catalog.WORLDS[world].title}", resets,
                   {"world": previous, "_world_was": previous})


def _undo(prefix: str) -> None:
    s = st.session_state
    change = s.pop(_key(prefix, "_changed"), None) or {}
    for name, value in change.get("undo", {}).items():
        s[_key(prefix, name)] = value


def change_notice(prefix: str) -> None:
    """What the last regime or world change set, with an Undo."""
    change = st.session_state.get(_key(prefix, "_changed"))
    if not change:
        return
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    c1.info(change["text"], icon=":material/info:")
    c2.button("Undo", key=_key(prefix, "undo"), on_click=_undo, args=(prefix,), icon=":material/undo:")


@dataclass(frozen=True)
class FormResult:
    spec: RunSpec | None
    error: str | None
    model: budget.ProductionModel
    guided_fraction: float | None  # the user's estimate when the grid's sigmas are not known here


def number_field(where: Any, prefix: str, name: str, *, step: float, disabled: str | None = None,
                 help: str | None = None, fields: Mapping[str, Field] = FIELDS, **kwargs: Any) -> None:
    """A number field with the label and bounds of ``fields`` (default ``form_fields.FIELDS``);
    ``disabled``: the reason it does not apply, shown as its help."""
    opt = fields[name].option
    cast = int if opt.type is int else float
    where.number_input(fields[name].label, min_value=cast(opt.min), max_value=cast(opt.max), step=step,
                       key=_key(prefix, name), disabled=disabled is not None,
                       help=disabled if disabled is not None else help, **kwargs)


def spec_form(prefix: str, *, show_run_options: bool = True, swept: Mapping[str, str] | None = None) -> FormResult:
    """Draw the form; return the RunSpec it describes (or the validation error, field named). ``swept``:
    fields a sweep sets (field -> 'X axis: 4, 8, 12'), drawn disabled with that text instead of a value."""
    init_state(prefix)
    k = lambda name: _key(prefix, name)  # noqa: E731
    s = st.session_state
    s.setdefault(k("_regime_was"), s[k("regime")])
    s.setdefault(k("_world_was"), s[k("world")])
    refusal_notice(prefix)
    swept_off = {n: f"Swept: {axis}. The sweep sets this field; the value here is not used."
                 for n, axis in (swept or {}).items()}
    st.selectbox(FIELDS["regime"].label, list(FIELDS["regime"].option.choices), key=k("regime"), disabled="regime" in swept_off,
                 format_func=lambda r: catalog.REGIMES[r].title, on_change=_apply_regime, args=(prefix,),
                 help=swept_off.get("regime", "The preset sets defaults and the budget the verdict is judged against."))
    st.selectbox(FIELDS["world"].label, list(field_choices("world")), key=k("world"), format_func=lambda n: catalog.WORLDS[n].title,
                 on_change=_apply_world, args=(prefix,), disabled="world" in swept_off, help=swept_off.get("world"))
    change_notice(prefix)
    # A field the world does not take is disabled with the reason, unless it holds a value the world
    # refuses (a link's or a stored spec's): then it stays editable so the refusal can be fixed here.
    off = {n: why for n, why in unsupported(s[k("world")]).items() if s[k(n)] == ONE[n]}
    off.update(swept_off)
    solver_options = _sampler_widgets(prefix, off)
    _step_widgets(prefix, off)
    _guidance_widgets(prefix, off)
    c1, c2, c3 = st.columns(3)
    number_field(c1, prefix, "horizon", step=1, disabled=off.get("horizon"))
    number_field(c2, prefix, "plans", step=1, disabled=off.get("plans"))
    number_field(c3, prefix, "futures", step=1, disabled=off.get("futures"))
    world_opts = _world_widgets(prefix)
    if show_run_options:
        c1, c2 = st.columns(2)
        number_field(c1, prefix, "seed", step=1, disabled=off.get("seed"))
        number_field(c2, prefix, "samples", step=100, disabled=off.get("samples"),
                     help="Independent planning cycles; each draws S x C x H x P·R NFE.")
        c1, c2 = st.columns(2)
        number_field(c1, prefix, "gate_cap", step=s[k("samples")] * s[k("plans")] * s[k("futures")],
                     disabled=off.get("gate_cap"), help="Sample in looks of samples x P x R rollouts until every "
                     "coverage check is decided (anytime-valid), at most this many; a multiple of one look.")
        number_field(c2, prefix, "gate_alpha", step=0.01, disabled=off.get("gate_alpha"), format="%.4f")
        st.text_input(FIELDS["name"].label, key=k("name"), max_chars=MAX_NAME)
    speedups = _speedup_widgets(prefix)
    with st.expander("Production model for the latency projection"):
        c1, c2, c3 = st.columns(3)
        number_field(c1, prefix, "per_nfe_ms", step=1.0, help="Seed: ~5-15 ms for a 1-3B latent DiT on a datacenter accelerator.")
        number_field(c2, prefix, "parallelism", step=1, help="Per-sample evaluations that run concurrently in one per-NFE latency.")
        number_field(c3, prefix, "usd_per_hour", step=0.5)
    sync_query_params(prefix)
    return form_result(prefix, world_opts, solver_options, speedups)


def _sampler_widgets(prefix: str, off: Mapping[str, str]) -> dict[str, Any]:
    """Family, then the solver (full width: its label is long) or the student; the solver's options."""
    k = lambda name: _key(prefix, name)  # noqa: E731
    s = st.session_state
    families = [f for f in FIELDS["sampler"].option.choices if f == "solver" or catalog.STUDENTS]
    st.radio(FIELDS["sampler"].label, families, key=k("sampler"), horizontal=True,
             help="A training-free solver on the teacher, or a distilled student with its own step count."
             + ("" if catalog.STUDENTS else " (No student checkpoints are registered yet.)"))
    if s[k("sampler")] == "student" and catalog.STUDENTS:
        if s.get(k("student")) not in catalog.STUDENTS:
            s[k("student")] = next(iter(catalog.STUDENTS))
        st.selectbox(FIELDS["student"].label, list(FIELDS["student"].option.choices), key=k("student"), disabled="student" in off,
                     help=off.get("student"), format_func=lambda n: catalog.STUDENTS[n].title)
        return {}
    st.selectbox(FIELDS["solver"].label, list(FIELDS["solver"].option.choices), key=k("solver"), disabled="solver" in off, help=off.get("solver"),
                 format_func=lambda n: f"{n} — {catalog.SOLVERS[n].title}")
    return _solver_option_widgets(prefix, s[k("solver")])


def _step_widgets(prefix: str, off: Mapping[str, str]) -> None:
    k = lambda name: _key(prefix, name)  # noqa: E731
    s = st.session_state
    c1, c2 = st.columns(2)
    c1.selectbox(FIELDS["grid"].label, list(FIELDS["grid"].option.choices), key=k("grid"), disabled="grid" in off,
                 format_func=lambda n: catalog.GRIDS[n].title, help=off.get("grid", "Chosen independently of the solver."))
    student = catalog.STUDENTS.get(s.get(k("student")) or "") if s[k("sampler")] == "student" else None
    if student is not None and student.fixed_steps:
        if s.get(k("steps")) not in student.steps:
            s[k("steps")] = student.steps[0]
        c2.selectbox(FIELDS["steps"].label, list(student.steps), key=k("steps"), disabled="steps" in off,
                     help=off.get("steps", f"{student.title} was distilled for these step counts."))
    else:
        number_field(c2, prefix, "steps", step=1, disabled=off.get("steps"))


def _guidance_widgets(prefix: str, off: Mapping[str, str]) -> None:
    k = lambda name: _key(prefix, name)  # noqa: E731
    s = st.session_state
    c1, c2 = st.columns(2)
    number_field(c1, prefix, "guidance_scale", step=0.5, disabled=off.get("guidance_scale"),
            help="0 and 1 need one network pass; any other scale is CFG: two passes (C = 2).")
    c2.checkbox(FIELDS["interval_on"].label, key=k("interval_on"), disabled="guidance_scale" in off,
                help="CFG only for sigma inside [lo, hi] (Kynkäänniemi et al. 2024): fractional C.")
    if s[k("interval_on")]:
        c1, c2, c3 = st.columns(3)
        number_field(c1, prefix, "interval_lo", step=0.1)
        number_field(c2, prefix, "interval_hi", step=0.1)
        c3.slider(FIELDS["guided_fraction"].label, 0.0, 1.0, step=0.05, key=k("guided_fraction"),
                  help="The grid's sigmas are computed by the workers; until a run counts them, the bill "
                       "uses this estimate. The run records the counted NFE.")


def _world_widgets(prefix: str) -> dict[str, Any]:
    """The world's scene and options (choices from the world's plugin)."""
    k = lambda name: _key(prefix, name)  # noqa: E731
    s = st.session_state
    world = catalog.WORLDS[s[k("world")]]
    if world.scenes:
        if s.get(k("scene")) not in world.scenes:
            s[k("scene")] = world.scenes[0]
        st.selectbox(FIELDS["scene"].label, list(world.scenes), key=k("scene"))
    elif world.name == MODEL_WORLD:  # the model picker: the registry read as data (no torch here)
        s[k("scene")] = None
        models = list(model_names())
        if s.get(k("model")) not in models:
            s[k("model")] = models[0] if models else None
        if models:
            st.selectbox(FIELDS["model"].label, models, key=k("model"), help="registered with `fastdiff models add PATH`")
        else:
            st.caption("No models registered: `fastdiff models add PATH` (a diffusers-format directory) adds one.")
    else:
        s[k("scene")] = None
        st.caption(f"{world.title}: no scenes. {world.doc}")
    world_opts = {}
    if world.options:
        cols = st.columns(2) * ((len(world.options) + 1) // 2)
        for col, (name, opt) in zip(cols, world.options.items()):
            if opt.choices is not None:
                if s.get(k(name)) not in opt.choices:
                    s[k(name)] = opt.default
                col.selectbox(f"{name}", list(opt.choices), key=k(name), help=opt.doc)
                world_opts[name] = s[k(name)]
    return world_opts


def form_result(prefix: str, world_opts: Mapping[str, Any], solver_options: Mapping[str, Any],
                speedups: Mapping[str, Any]) -> FormResult:
    """The form's values as a RunSpec (or the error naming the field) and its production model."""
    k = lambda name: _key(prefix, name)  # noqa: E731
    s = st.session_state
    model = budget.ProductionModel(per_nfe_s=float(s[k("per_nfe_ms")]) / 1000.0,
                                   parallelism=int(s[k("parallelism")]), usd_per_hour=float(s[k("usd_per_hour")]))
    fields: dict[str, Any] = {
        "world": s[k("world")], "world_options": dict(world_opts), "scene": s[k("scene")],
        "model": s.get(k("model")) if s[k("world")] == MODEL_WORLD else None,
        "sampler": s[k("sampler")], "grid": s[k("grid")], "steps": int(s[k("steps")]),
        "guidance_scale": float(s[k("guidance_scale")]),
        "guidance_interval": (float(s[k("interval_lo")]), float(s[k("interval_hi")])) if s[k("interval_on")] else None,
        "horizon": int(s[k("horizon")]), "plans": int(s[k("plans")]), "futures": int(s[k("futures")]),
        "seed": int(s[k("seed")]), "samples": int(s[k("samples")]), "regime": s[k("regime")],
        "name": s[k("name")] or "", "gate_cap": int(s[k("gate_cap")]) or None, "gate_alpha": float(s[k("gate_alpha")]),
    }
    fields.update(speedups)
    if fields["sampler"] == "student":
        fields["student"] = s[k("student")]
    else:
        fields["solver"] = s[k("solver")]
        fields["solver_options"] = dict(solver_options)
    frac = float(s[k("guided_fraction")]) if s[k("interval_on")] else None
    if refusals(prefix):
        return FormResult(None, "Values in the link were refused (above): confirm to continue with the form's "
                                "values.", model, frac)
    try:
        return FormResult(RunSpec(**fields), None, model, frac)
    except ValueError as e:
        return FormResult(None, str(e), model, frac)


def _solver_option_widgets(prefix: str, solver: str) -> dict[str, Any]:
    """The solver's own options from the catalog (DDIM's eta, UniPC's order, the adaptive solvers'
    tolerances, ...), each with the catalog's choices or range; returns the ones not at their default,
    which is what the RunSpec records."""
    s = st.session_state
    options = catalog.SOLVERS[solver].options
    if not options:
        return {}
    keys = {name: _option_key(prefix, solver, name) for name in options}
    for name, opt in options.items():
        s.setdefault(keys[name], opt.default)
    changed = {name: s[keys[name]] for name, opt in options.items() if s[keys[name]] != opt.default}
    label = f"{solver} options" + (f" ({', '.join(f'{n}={v}' for n, v in changed.items())})" if changed else "")
    with st.expander(label, expanded=bool(changed)):
        cols = st.columns(min(len(options), 3))
        for i, (name, opt) in enumerate(options.items()):
            col, key = cols[i % len(cols)], keys[name]
            if opt.choices is not None:
                col.selectbox(name, list(opt.choices), key=key, help=opt.doc)
            elif opt.type is bool:
                col.checkbox(name, key=key, help=opt.doc)
            elif opt.type is int:
                col.number_input(name, min_value=None if opt.min is None else int(opt.min),
                                 max_value=None if opt.max is None else int(opt.max), step=1, key=key, help=opt.doc)
            else:
                lo = opt.min if opt.min is not None and opt.min_inclusive else None
                small = 0 < opt.default < 0.1  # a tolerance: step by its own decade (1e-3 -> 1e-3)
                col.number_input(name, min_value=None if lo is None else float(lo),
                                 max_value=None if opt.max is None else float(opt.max),
                                 step=10.0 ** math.floor(math.log10(opt.default)) if small else 0.05,
                                 format="%g", key=key, help=opt.doc)
    return changed  # a widget's value is in session state before the run that draws it


_SPEEDUP_FLAGS = ("compile", "warm_start")  # RunSpec's boolean speed-up fields (spec.FIELDS: default, doc)


def _speedup_widgets(prefix: str) -> dict[str, Any]:
    """The systems speed-ups RunSpec has (catalog.SPEEDUPS), each a toggle measured by the run."""
    infos = catalog.SPEEDUPS
    out: dict[str, Any] = {}
    s = st.session_state
    with st.expander("Speed-ups (each one measured on NFE, wall clock and coverage)"):
        cols = st.columns(2) * ((len(infos) + 1) // 2)
        for col, (name, info) in zip(cols, infos.items()):
            key = _key(prefix, name)
            if s.get(key) not in info.modes:
                s[key] = info.modes[0]
            col.selectbox(info.title, list(info.modes), key=key, help=info.paper)
            out[name] = s[key]
        for name in _SPEEDUP_FLAGS:
            key = _key(prefix, name)
            s.setdefault(key, SPEC_FIELDS[name].default)
            st.checkbox(name.replace("_", " "), key=key, help=SPEC_FIELDS[name].doc)
            out[name] = bool(s[key])
    return out


def spec_summary(spec: RunSpec) -> str:
    """One line naming a spec: sampler, grid, steps, guidance, fan-out."""
    who = spec.student if spec.sampler == "student" else spec.solver
    if spec.sampler == "solver" and spec.solver_options:
        who += "(" + ", ".join(f"{k}={v}" for k, v in sorted(spec.solver_options.items())) + ")"
    gi = f" [{spec.guidance_interval[0]:g}, {spec.guidance_interval[1]:g}]" if spec.guidance_interval else ""
    return (f"{who} · {spec.grid} · {spec.steps} steps · w={spec.guidance_scale:g}{gi} · "
            f"H={spec.horizon} · P·R={spec.plans}x{spec.futures} · n={spec.samples}")


def spec_rows(spec: RunSpec, axes: Mapping[str, Any] | None = None) -> list[dict[str, str]]:
    """A spec as a readable table (field, value), the fields a page's form shows first; ``axes``: a
    sweep's axes, shown as the values each swept field takes instead of the base value."""
    d = spec.to_dict()
    first = ["name", "regime", "world", "scene", "world_options", "sampler", "solver", "student", "solver_options",
             "grid", "steps", "guidance_scale", "guidance_interval", "horizon", "plans", "futures", "samples", "seed"]
    order = [k for k in first if k in d] + sorted(k for k in d if k not in first)
    rows = []
    for k in order:
        v = d[k]
        if axes and k in axes:
            rows.append({"field": k, "value": "swept: " + ", ".join(map(str, axes[k]))})
            continue
        if v in (None, "", {}, []) and k not in ("name",):
            continue
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in sorted(v.items()))
        rows.append({"field": k, "value": str(v)})
    for k, vals in (axes or {}).items():
        if k not in d:
            rows.append({"field": k, "value": "swept: " + ", ".join(map(str, vals))})
    return rows


def spec_json(spec: RunSpec) -> str:
    return json.dumps(spec.to_dict(), indent=2, sort_keys=True)
