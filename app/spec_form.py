"""The RunSpec form shared by Explore and Sweep: widgets -> a validated RunSpec (or the error).

Widget state lives in ``st.session_state`` under ``{prefix}.{field}``; the non-default values are
mirrored into the URL's query parameters so a browser refresh restores the form (query parameters
are cleared on page switch, session state carries the form across pages).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import streamlit as st

from fastdiff_core import budget, catalog
from fastdiff_core.models.model_registry import model_names
from fastdiff_core.spec import MODEL_WORLD, RunSpec

FORM_DEFAULTS: dict[str, Any] = {
    "regime": "offline",
    "sampler": "solver",
    "solver": "dpmpp_2m",
    "grid": "karras",
    "student": None,
    "steps": 20,
    "guidance_scale": 1.0,
    "interval_on": False,
    "interval_lo": 0.3,
    "interval_hi": 5.0,
    "guided_fraction": 0.5,
    "horizon": 1,
    "plans": 1,
    "futures": 1,
    "world": "mixture",
    "scene": None,
    "model": None,
    "preset": "rare2d",
    "path": "vp_linear",
    "prediction": "eps",
    "condition": "none",
    "seed": 0,
    "samples": 2000,
    "per_nfe_ms": 10.0,
    "parallelism": 1,
    "usd_per_hour": 2.0,
    "name": "",
}
_TYPES = {k: type(v) for k, v in FORM_DEFAULTS.items() if v is not None}


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}"


def init_state(prefix: str) -> None:
    """Fill defaults once per session, then let the URL's query parameters override them."""
    flag = _key(prefix, "_init")
    if st.session_state.get(flag):
        return
    for name, value in FORM_DEFAULTS.items():
        st.session_state.setdefault(_key(prefix, name), value)
    for name, raw in st.query_params.items():
        if name in FORM_DEFAULTS:
            try:
                st.session_state[_key(prefix, name)] = _parse(name, raw)
            except (ValueError, TypeError):
                pass  # a hand-edited URL value that does not parse keeps the default
    if "parallelism" not in st.query_params:  # the regime's production model, as its verdicts state it
        st.session_state[_key(prefix, "parallelism")] = _lanes(st.session_state[_key(prefix, "regime")])
    solver = st.session_state[_key(prefix, "solver")]
    options = catalog.SOLVERS[solver].options if solver in catalog.SOLVERS else {}
    for name, raw in st.query_params.items():
        opt = options.get(name[len(_OPT):]) if name.startswith(_OPT) else None
        if opt is not None:
            try:
                st.session_state[_option_key(prefix, solver, name[len(_OPT):])] = opt.check(name, _from_url(opt.type, raw))
            except (ValueError, TypeError):
                pass
    st.session_state[flag] = True


_OPT = "opt."  # query parameters of the chosen solver's options: opt.eta=0.5


def _option_key(prefix: str, solver: str, name: str) -> str:
    """Each solver keeps its own option values, so switching solvers and back keeps them."""
    return _key(prefix, f"{_OPT}{solver}.{name}")


def _parse(name: str, raw: str) -> Any:
    t = _TYPES.get(name)
    if raw == "" and FORM_DEFAULTS[name] is None:
        return None
    return _from_url(t, raw) if t in (bool, int, float) else raw


def _to_url(v: Any) -> str:
    """A form value as a query parameter: None -> '', booleans -> '1' / '0'."""
    return "" if v is None else (("1" if v else "0") if isinstance(v, bool) else str(v))


def _from_url(t: type, raw: str) -> Any:
    """The inverse of ``_to_url`` for a value of type ``t`` (booleans also from 'true' / 'True')."""
    return raw in ("1", "true", "True") if t is bool else t(raw)


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
                 "futures", "world", "scene", "model", "seed", "samples", "name"):
        s[_key(prefix, name)] = getattr(spec, name)
    s[_key(prefix, "regime")] = spec.regime or "offline"
    s[_key(prefix, "parallelism")] = _lanes(spec.regime or "offline")
    if spec.solver in catalog.SOLVERS:
        for name, opt in catalog.SOLVERS[spec.solver].options.items():
            s[_option_key(prefix, spec.solver, name)] = spec.solver_options.get(name, opt.default)
    for name in ("preset", "path", "prediction", "condition"):
        if name in spec.world_options:
            s[_key(prefix, name)] = spec.world_options[name]
    for name in [*getattr(catalog, "SPEEDUPS", {}), *_SPEEDUP_FLAGS]:
        if hasattr(spec, name):
            s[_key(prefix, name)] = getattr(spec, name)
    if spec.guidance_interval is not None:
        s[_key(prefix, "interval_on")] = True
        s[_key(prefix, "interval_lo")], s[_key(prefix, "interval_hi")] = spec.guidance_interval


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


def _apply_regime(prefix: str) -> None:
    regime = st.session_state[_key(prefix, "regime")]
    defaults = {n: FORM_DEFAULTS[n] for n in ("horizon", "plans", "futures")}
    defaults.update(catalog.REGIMES[regime].defaults)
    defaults["parallelism"] = _lanes(regime)
    for name, value in defaults.items():
        if name in FORM_DEFAULTS:
            st.session_state[_key(prefix, name)] = value


@dataclass(frozen=True)
class FormResult:
    spec: RunSpec | None
    error: str | None
    model: budget.ProductionModel
    guided_fraction: float | None  # the user's estimate when the grid's sigmas are not known here


def spec_form(prefix: str, *, show_run_options: bool = True) -> FormResult:
    """Draw the form; return the RunSpec it describes (or the validation error, field named)."""
    init_state(prefix)
    k = lambda name: _key(prefix, name)  # noqa: E731
    s = st.session_state

    st.selectbox("Regime", list(catalog.REGIMES), key=k("regime"),
                 format_func=lambda r: catalog.REGIMES[r].title, on_change=_apply_regime, args=(prefix,),
                 help="The preset sets defaults and the budget the verdict is judged against.")
    c1, c2 = st.columns(2)
    families = ["solver"] + (["student"] if catalog.STUDENTS else [])
    c1.radio("Family", families, key=k("sampler"), horizontal=True,
             help="A training-free solver on the teacher, or a distilled student with its own step count."
             + ("" if catalog.STUDENTS else " (No student checkpoints are registered yet.)"))
    if s[k("sampler")] == "student" and catalog.STUDENTS:
        if s.get(k("student")) not in catalog.STUDENTS:
            s[k("student")] = next(iter(catalog.STUDENTS))
        c2.selectbox("Student", list(catalog.STUDENTS), key=k("student"),
                     format_func=lambda n: catalog.STUDENTS[n].title)
    else:
        c2.selectbox("Solver", list(catalog.SOLVERS), key=k("solver"),
                     format_func=lambda n: f"{n} — {catalog.SOLVERS[n].title}")
    solver_options = _solver_option_widgets(prefix, s[k("solver")]) if s[k("sampler")] == "solver" else {}
    c1, c2 = st.columns(2)
    c1.selectbox("Grid", [g for g in catalog.GRIDS if g != "custom"], key=k("grid"),
                 format_func=lambda n: catalog.GRIDS[n].title, help="Chosen independently of the solver.")
    student = catalog.STUDENTS.get(s.get(k("student")) or "") if s[k("sampler")] == "student" else None
    if student is not None and getattr(student, "fixed_steps", True):
        if s.get(k("steps")) not in student.steps:
            s[k("steps")] = student.steps[0]
        c2.selectbox("Steps", list(student.steps), key=k("steps"),
                     help=f"{student.title} was distilled for these step counts.")
    else:
        c2.number_input("Steps", min_value=1, max_value=1000, step=1, key=k("steps"))
    c1, c2 = st.columns(2)
    c1.number_input("Guidance scale", min_value=0.0, max_value=50.0, step=0.5, key=k("guidance_scale"),
                    help="0 and 1 need one network pass; any other scale is CFG: two passes (C = 2).")
    c2.checkbox("Guidance interval", key=k("interval_on"),
                help="CFG only for sigma inside [lo, hi] (Kynkäänniemi et al. 2024): fractional C.")
    if s[k("interval_on")]:
        c1, c2, c3 = st.columns(3)
        c1.number_input("sigma lo", min_value=0.0, step=0.1, key=k("interval_lo"))
        c2.number_input("sigma hi", min_value=0.0, step=0.1, key=k("interval_hi"))
        c3.slider("Share of evaluations guided (estimate)", 0.0, 1.0, step=0.05, key=k("guided_fraction"),
                  help="The grid's sigmas are computed by the workers; until a run counts them, the bill "
                       "uses this estimate. The run records the counted NFE.")
    c1, c2, c3 = st.columns(3)
    c1.number_input("Horizon H (frames)", min_value=1, max_value=1000, step=1, key=k("horizon"))
    c2.number_input("Plans P", min_value=1, max_value=10_000, step=1, key=k("plans"))
    c3.number_input("Futures R per plan", min_value=1, max_value=10_000, step=1, key=k("futures"))
    c1, c2 = st.columns(2)
    c1.selectbox("World", list(catalog.WORLDS), key=k("world"), format_func=lambda n: catalog.WORLDS[n].title)
    world = catalog.WORLDS[s[k("world")]]
    if world.scenes:
        if s.get(k("scene")) not in world.scenes:
            s[k("scene")] = world.scenes[0]
        c2.selectbox("Scene", list(world.scenes), key=k("scene"))
    elif world.name == MODEL_WORLD:  # the model picker: the registry read as data (no torch here)
        s[k("scene")] = None
        models = list(model_names())
        if s.get(k("model")) not in models:
            s[k("model")] = models[0] if models else None
        if models:
            c2.selectbox("Model", models, key=k("model"), help="registered with `fastdiff models add PATH`")
        else:
            c2.caption("No models registered: `fastdiff models add PATH` (a diffusers-format directory) adds one.")
    else:
        s[k("scene")] = None
        c2.caption(f"{world.title}: no scenes. {world.doc}")
    world_opts = {}
    if world.options:
        cols = st.columns(2) * ((len(world.options) + 1) // 2)
        for col, (name, opt) in zip(cols, world.options.items()):
            if opt.choices is not None:
                if s.get(k(name)) not in opt.choices:
                    s[k(name)] = opt.default
                col.selectbox(f"{name}", list(opt.choices), key=k(name), help=opt.doc)
                world_opts[name] = s[k(name)]
    if show_run_options:
        c1, c2 = st.columns(2)
        c1.number_input("Seed", min_value=0, step=1, key=k("seed"))
        c2.number_input("Rollouts (samples)", min_value=1, max_value=1_000_000, step=100, key=k("samples"),
                        help="Independent planning cycles; each draws S x C x H x P·R NFE.")
        st.text_input("Name (optional)", key=k("name"), max_chars=200)
    speedups = _speedup_widgets(prefix)
    with st.expander("Production model for the latency projection"):
        c1, c2, c3 = st.columns(3)
        c1.number_input("Per-NFE latency (ms)", min_value=0.01, max_value=10_000.0, step=1.0, key=k("per_nfe_ms"),
                        help="Seed: ~5-15 ms for a 1-3B latent DiT on a datacenter accelerator.")
        c2.number_input("Parallel lanes", min_value=1, max_value=100_000, step=1, key=k("parallelism"),
                        help="Per-sample evaluations that run concurrently in one per-NFE latency.")
        c3.number_input("$ per accelerator-hour", min_value=0.0, step=0.5, key=k("usd_per_hour"))
    sync_query_params(prefix)

    model = budget.ProductionModel(per_nfe_s=float(s[k("per_nfe_ms")]) / 1000.0,
                                   parallelism=int(s[k("parallelism")]), usd_per_hour=float(s[k("usd_per_hour")]))
    fields: dict[str, Any] = {
        "world": s[k("world")], "world_options": world_opts, "scene": s[k("scene")],
        "model": s.get(k("model")) if s[k("world")] == MODEL_WORLD else None,
        "sampler": s[k("sampler")], "grid": s[k("grid")], "steps": int(s[k("steps")]),
        "guidance_scale": float(s[k("guidance_scale")]),
        "guidance_interval": (float(s[k("interval_lo")]), float(s[k("interval_hi")])) if s[k("interval_on")] else None,
        "horizon": int(s[k("horizon")]), "plans": int(s[k("plans")]), "futures": int(s[k("futures")]),
        "seed": int(s[k("seed")]), "samples": int(s[k("samples")]), "regime": s[k("regime")],
        "name": s[k("name")] or "",
    }
    fields.update(speedups)
    if fields["sampler"] == "student":
        fields["student"] = s[k("student")]
    else:
        fields["solver"] = s[k("solver")]
        fields["solver_options"] = solver_options
    frac = float(s[k("guided_fraction")]) if s[k("interval_on")] else None
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


_SPEC_FIELDS = {f.name for f in dataclasses.fields(RunSpec)}
_SPEEDUP_FLAGS = {"compile": (False, "torch.compile the network"),
                  "warm_start": (True, "start each planning cycle from the previous one")}


def _speedup_widgets(prefix: str) -> dict[str, Any]:
    """The systems speed-ups RunSpec has (catalog.SPEEDUPS), each a toggle measured by the run."""
    infos = {n: i for n, i in getattr(catalog, "SPEEDUPS", {}).items() if n in _SPEC_FIELDS}
    flags = {n: v for n, v in _SPEEDUP_FLAGS.items() if n in _SPEC_FIELDS}
    if not infos and not flags:
        return {}
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
        for name, (default, doc) in flags.items():
            key = _key(prefix, name)
            s.setdefault(key, default)
            st.checkbox(name.replace("_", " "), key=key, help=doc)
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


def spec_json(spec: RunSpec) -> str:
    return json.dumps(spec.to_dict(), indent=2, sort_keys=True)
