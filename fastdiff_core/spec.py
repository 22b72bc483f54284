"""RunSpec and RunResult: the validated, JSON-serialisable objects that cross every boundary.

form -> RunSpec -> queue -> worker -> execute -> RunResult -> store -> page. Torch-free, so the
dashboard and the store can build, validate and read them.

RunSpec is frozen and validated where it is made: every error names the field, the value and what
is allowed. JSON carries ``schema_version``; ``RunSpec.from_json`` upgrades older versions through
``_MIGRATIONS`` and refuses unknown fields rather than dropping them.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import InitVar, asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping, get_args

from fastdiff_core import catalog
from fastdiff_core.limits import RunLimits, peak_memory_mb
from fastdiff_core.models.model_registry import check_name, model_entry, model_names
from fastdiff_core.registry import Option, validate_options
from fastdiff_core.worlds import world_names, world_plugin

SCHEMA_VERSION = 1
# RunResult JSON: 2 = nfe_counted / nfe_formula are per run for every world (version 1 stored the
# mixture's per sample); ``upgrade_result`` reads version 1.
RESULT_SCHEMA_VERSION = 2

WorldName = str  # a registered world plugin's name (fastdiff_core.worlds)
# the choices of dtype, device and sampler (spec.FIELDS reads them from these annotations)
Dtype = Literal["float32", "float64"]
DeviceChoice = Literal["auto", "cpu", "cuda"]
SamplerKind = Literal["solver", "student"]

MAX_SAMPLES = 1_000_000
MODEL_WORLD = "model"  # the world that samples a user's model (fastdiff_core.worlds.model)
MAX_STEPS = 1000
GATE_ALPHA = 0.05  # the release gate's family-wise error rate (metrics.gate.RELEASE_GATE)
MAX_GATE_ALPHA = 0.5
MAX_SEED = 2**63 - 1  # run seeds are 63-bit (fastdiff_core.seeds derives generator seeds in this range)


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


# RunSpec's scalar fields, declared once: type, default, bounds or choices, doc. RunSpec validation
# (``_check_field``), the JSON schema published for API users (``fastdiff_core.schema``), the form's
# bounds (``app.form_fields``) and the `fastdiff run` flags read these. ``world``'s choices are the
# registered world plugins, read live (``field_choices``).
FIELDS: dict[str, Option] = {
    "world": Option(str, "mixture", "a registered world plugin (fastdiff_core.worlds)"),
    "scene": Option(str, None, "the world's scene: required by a world with scenes, null for one without",
                    nullable=True),
    "model": Option(str, None, f"a registered model's name (fastdiff_core.models.model_registry); world "
                    f"{MODEL_WORLD!r} only", nullable=True),
    "sampler": Option(str, "solver", "a training-free solver or a distilled student", choices=get_args(SamplerKind)),
    "solver": Option(str, "dpmpp_2m", "the solver (catalog.SOLVERS)", choices=tuple(catalog.SOLVERS)),
    "grid": Option(str, "karras", "the sigma grid (catalog.GRIDS)", choices=tuple(catalog.GRIDS)),
    "steps": Option(int, 10, "solver steps", min=1, max=MAX_STEPS),
    "student": Option(str, None, "the distilled student (catalog.STUDENTS); sampler 'student' only",
                      choices=tuple(catalog.STUDENTS), nullable=True),
    "guidance_scale": Option(float, 1.0, "classifier-free guidance scale (1: unguided)", min=0.0),
    "horizon": Option(int, 1, "rollout frames H", min=1, max=1000),
    "plans": Option(int, 1, "candidate plans P", min=1, max=10_000),
    "futures": Option(int, 1, "futures R per plan", min=1, max=10_000),
    "samples": Option(int, 1000, "samples (planning cycles)", min=1, max=MAX_SAMPLES),
    "seed": Option(int, 0, "random seed", min=0, max=MAX_SEED),
    "dtype": Option(str, "float32", "the sampling loop's dtype", choices=get_args(Dtype)),
    "device": Option(str, "auto", "where the run executes (auto: the GPU if there is one)",
                     choices=get_args(DeviceChoice)),
    "regime": Option(str, None, "the regime the run is judged in (catalog.REGIMES)",
                     choices=tuple(catalog.REGIMES), nullable=True),
    "name": Option(str, "", "a free-text label", max_length=200),
    **{name: Option(str, info.modes[0], info.title, choices=info.modes) for name, info in catalog.SPEEDUPS.items()},
    "compile": Option(bool, False, "torch.compile the network"),
    "warm_start": Option(bool, True, "planning: start each cycle from the previous cycle's plan"),
    "gate_alpha": Option(float, GATE_ALPHA, "the coverage gate's family-wise error rate", min=0.0,
                         min_inclusive=False, max=MAX_GATE_ALPHA, max_inclusive=False),
    "gate_cap": Option(int, None, "null: one fixed sample; an integer: a sequential gate's most rollouts, a multiple "
                       "of samples x plans x futures", min=1, nullable=True),
}
# The tuned grids (grid_options.solver) UniPC bh1 may use: measured no worse than bh1's best fixed grid at NFE 4,
# 6 and 8 (tools/lownfe_probe.py variants; docs/lownfe.md); the unipc and dpmpp_2m ones blur with bh1.
BH1_TUNED_GRIDS = ("ipndm",)
# The option maps: field -> the field naming the registry entry whose option schema applies.
OPTION_FIELDS = {"world_options": "world", "solver_options": "solver", "grid_options": "grid",
                 "cache_options": "feature_cache", "parallel_options": "parallel", "importance_options": "importance"}
# Rules RunSpec enforces across fields (beyond each field's own type, bounds and choices). The published
# JSON schema states those it can (if/then) and lists every one in its description.
CROSS_FIELD_RULES = (
    "scene: one of the world's scenes for a world with scenes, else null",
    f"model: required with world {MODEL_WORLD!r} (a registered model), else null",
    ("student: required with sampler 'student', null with sampler 'solver'; a fixed-step student takes only "
     "its own step counts"),
    ("solver_options, grid_options, world_options, cache_options, parallel_options, importance_options: the options "
     "of the chosen solver, grid, world and speed-up modes (solver_options are not checked with sampler 'student')"),
    "grid 'custom': grid_options.sigmas strictly decreasing finite numbers >= 0 whose nonzero count equals steps",
    "grid 'tuned': steps in 3..10",
    "guidance_interval: null or [sigma_lo, sigma_hi], finite, 0 <= sigma_lo < sigma_hi",
    "gate_cap: a multiple of samples x plans x futures, at most 1,000,000 such looks",
    f"parallel 'picard': solver one of {list(catalog.PICARD_SOLVERS)} (ddim with eta 0), sampler 'solver' and "
    "feature_cache 'off'",
    "precision 'int8': not with device 'cuda'",
    "integer fields take JSON integers (10, not 10.0: JSON schema counts 10.0 as an integer, RunSpec does not)",
    ("the run limits (FASTDIFF_MAX_RUN_NFE, FASTDIFF_MAX_ROLLOUTS, FASTDIFF_MAX_PEAK_MB; docs/limits.md) bound the "
     "NFE bill, the rollout frames and the estimated peak memory of a new run"),
    "what the world supports (its plugin's capabilities: docs/plugins.md) is checked before a run is queued",
)
_CHECKED_WITH_OTHERS = ("gate_cap",)  # its message names the look, so _check_gate checks it whole


def field_choices(name: str) -> tuple[Any, ...] | None:
    """The values RunSpec field ``name`` allows, read live (a world plugin may register after import)."""
    return world_names() if name == "world" else FIELDS[name].choices


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_field(name: str, opt: Option, value: Any) -> Any:
    """RunSpec field ``name``'s value checked against its declaration (returned, floats as float), or a
    ValueError naming the field, the value and what is allowed."""
    if value is None and opt.nullable:
        return None
    if opt.type is str:
        if not isinstance(value, str):  # a list or a number where a name belongs is refused before any lookup
            expected = "a string" + (" or null" if opt.nullable else "")
            raise ValueError(f"{name}={_shown(value)} has type {type(value).__name__}; expected {expected}")
        allowed = field_choices(name)
        if allowed is not None and value not in allowed:
            raise ValueError(f"{name}={value!r} is not one of {list(allowed)}")
        if opt.max_length is not None and len(value) > opt.max_length:
            raise ValueError(f"{name}={_shown(value)} must be a string of at most {opt.max_length} characters")
        return value
    if opt.type is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r} must be true or false")
        return value
    if opt.type is int:
        if isinstance(value, bool) or not isinstance(value, int) or not (opt.min <= value <= opt.max):
            raise ValueError(f"{name}={_shown(value)} must be an integer in [{opt.min}, {opt.max}]")
        return value
    number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if opt.max is None:
        if not number or value < opt.min:
            raise ValueError(f"{name}={_shown(value)} must be a finite number >= {opt.min}")
        return float(value)
    above = number and (value >= opt.min if opt.min_inclusive else value > opt.min)
    if not (above and (value <= opt.max if opt.max_inclusive else value < opt.max)):
        br, ket = "[" if opt.min_inclusive else "(", "]" if opt.max_inclusive else ")"
        raise ValueError(f"{name}={_shown(value)} must be a number in {br}{opt.min:g}, {opt.max:g}{ket} ({opt.doc}; "
                         f"default {opt.default:g})")
    return float(value)


def _option_schema(options: str, entry: str) -> Mapping[str, Option]:
    """The option schema of the registry entry ``entry`` that option map ``options`` belongs to."""
    if options == "world_options":
        return catalog.world_info(entry).options
    if options == "solver_options":
        return catalog.SOLVERS[entry].options
    if options == "grid_options":
        return catalog.GRIDS[entry].options
    return catalog.SPEEDUPS[OPTION_FIELDS[options]].options


def _finite(field_name: str, value: Any, lo: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{field_name}={value!r} must be a finite number" + (f" >= {lo}" if lo is not None else ""))
    if lo is not None and value < lo:
        raise ValueError(f"{field_name}={value!r} must be a finite number >= {lo}")
    return float(value)


@dataclass(frozen=True)
class RunSpec:
    """One experiment run. Fields are grouped as: what world, what sampler, what fan-out, how run.

    NFE bill per run = NFE(solver, steps) x C(guidance) x horizon x plans x futures x samples.

    A new spec must fit the run limits (``check_run_limits``: NFE, rollout frames, peak memory, from
    the environment). ``enforce_limits=False`` is for records of runs that already happened (a stored
    result read back under tighter limits); it is not a field and never travels in JSON.
    """

    # what world
    world: WorldName = FIELDS["world"].default
    world_options: Mapping[str, Any] = field(default_factory=dict)
    scene: str | None = None
    model: str | None = None  # a registered model's name (fastdiff_core.models.model_registry), world 'model'
    # what sampler
    sampler: SamplerKind = FIELDS["sampler"].default
    solver: str = FIELDS["solver"].default
    solver_options: Mapping[str, Any] = field(default_factory=dict)
    grid: str = FIELDS["grid"].default
    grid_options: Mapping[str, Any] = field(default_factory=dict)
    steps: int = FIELDS["steps"].default
    student: str | None = None
    guidance_scale: float = FIELDS["guidance_scale"].default
    guidance_interval: tuple[float, float] | None = None
    # what fan-out
    horizon: int = FIELDS["horizon"].default
    plans: int = FIELDS["plans"].default
    futures: int = FIELDS["futures"].default
    samples: int = FIELDS["samples"].default
    # how run
    seed: int = FIELDS["seed"].default
    dtype: Dtype = FIELDS["dtype"].default
    device: DeviceChoice = FIELDS["device"].default
    regime: str | None = None
    name: str = FIELDS["name"].default
    # speed-ups, each a measured toggle (catalog.SPEEDUPS; fastdiff_core.speedups applies them)
    feature_cache: str = FIELDS["feature_cache"].default
    cache_options: Mapping[str, Any] = field(default_factory=dict)
    parallel: str = FIELDS["parallel"].default
    parallel_options: Mapping[str, Any] = field(default_factory=dict)
    precision: str = FIELDS["precision"].default
    compile: bool = FIELDS["compile"].default
    importance: str = FIELDS["importance"].default
    importance_options: Mapping[str, Any] = field(default_factory=dict)
    warm_start: bool = FIELDS["warm_start"].default
    # the coverage gate (fastdiff_core.metrics.gate): its family-wise error rate, and the cap of a
    # sequential gate -- null: one fixed sample; an integer: sample looks of samples x plans x futures
    # rollouts until every check is decided, at most gate_cap rollouts (worlds whose plugin declares
    # Capabilities.coverage_gate)
    gate_alpha: float = FIELDS["gate_alpha"].default
    gate_cap: int | None = None
    schema_version: int = SCHEMA_VERSION
    enforce_limits: InitVar[bool] = True

    def __post_init__(self, enforce_limits: bool) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version={self.schema_version!r}; this build writes {SCHEMA_VERSION}")
        for name, opt in FIELDS.items():  # each field's own type, bounds and choices
            if name not in _CHECKED_WITH_OTHERS:
                object.__setattr__(self, name, _check_field(name, opt, getattr(self, name)))
        for options, entry in OPTION_FIELDS.items():  # the options of the chosen entries
            if options != "solver_options" or self.sampler == "solver":
                schema = _option_schema(options, getattr(self, entry))
                object.__setattr__(self, options, _frozen(validate_options(options, getattr(self, options), schema)))
            else:  # a student's solver options are not the solver's: an object, checked by the student
                if not isinstance(self.solver_options, Mapping):
                    raise ValueError(f"{options}={self.solver_options!r} must be an object mapping option names "
                                     "to values")
                object.__setattr__(self, options, _frozen(dict(self.solver_options)))
        self._check_world()
        self._check_student()
        self._check_grid()
        self._check_guidance_interval()
        self._check_speedups()
        self._check_gate()
        if enforce_limits:  # a new run; a record of a run that happened stays readable
            self._check_tuned_variant()
            check_run_limits(self)

    def refusal(self) -> str | None:
        """Why this spec's world cannot run it (what the world supports is declared once, by its plugin:
        ``fastdiff_core.worlds``), or None. A spec the world cannot run still describes a bill or a
        projection; ``execute``, the client (before queueing) and the page's Run button refuse it with
        this one message."""
        return world_plugin(self.world).refusal(self)

    def runnable(self) -> "RunSpec":
        """This spec, if its world can run it; else ValueError with ``refusal()``'s message."""
        why = self.refusal()
        if why is not None:
            raise ValueError(why)
        return self

    def _check_world(self) -> None:
        """The world's scene, and a user's model named by its registry name (an id; never a path)."""
        scenes = catalog.world_info(self.world).scenes
        if scenes:
            if self.scene is None or self.scene not in scenes:
                raise ValueError(f"scene={self.scene!r} is not one of {list(scenes)} for world={self.world!r}")
        elif self.scene is not None:
            raise ValueError(f"scene={self.scene!r} given, but world={self.world!r} has no scenes")
        if self.world == MODEL_WORLD and self.model is None:
            raise ValueError(f"model=None: world={MODEL_WORLD!r} needs a registered model; available: "
                             f"{list(model_names())}")
        if self.model is not None:
            if self.world != MODEL_WORLD:
                raise ValueError(f"model={self.model!r} given, but world={self.world!r} samples its own network; "
                                 f"set world={MODEL_WORLD!r}")
            model_entry(check_name(self.model))

    def _check_student(self) -> None:
        if self.sampler == "solver":
            if self.student is not None:
                raise ValueError(f"student={self.student!r} given with sampler='solver'; set sampler='student'")
            return
        if self.student is None:
            raise ValueError(f"student=None is not one of {list(FIELDS['student'].choices)} (sampler='student')")
        info = catalog.STUDENTS[self.student]
        if info.fixed_steps and self.steps not in info.steps:
            raise ValueError(f"steps={self.steps!r} is not available for student={self.student!r}; "
                             f"allowed: {list(info.steps)}")

    def _check_grid(self) -> None:
        if self.grid == "custom":
            _check_custom_sigmas(self.grid_options["sigmas"], self.steps)
        if self.grid == "tuned" and self.steps not in catalog.TUNED_STEPS:
            raise ValueError(f"steps={self.steps!r} has no tuned grid; allowed with grid='tuned': "
                             f"{catalog.TUNED_STEPS[0]}-{catalog.TUNED_STEPS[-1]}")
        if self.grid == "tuned":
            # Unless given, the grid fitted for the run's own solver and last step: a grid fitted to be evaluated
            # last, used by a run that stops there without evaluating, leaves noise around thin modes
            # (docs/lownfe.md, NFE 6 second pass); another solver's grid costs up to 1.3x the RMSE.
            own = self._tuned_own()
            object.__setattr__(self, "grid_options", _frozen({
                **self.grid_options, **{k: v for k, v in own.items() if self.grid_options.get(k) is None}}))

    def _tuned_own(self) -> dict[str, str]:
        """The tuned grid's options that follow the run: its solver's grids (dpmpp_2m's for a solver without
        any) for its last-step convention."""
        solver = self.solver if self.sampler == "solver" and self.solver in catalog.TUNED_SOLVERS \
            else catalog.TUNED_SOLVERS[0]
        final = self.solver_options.get("final") if self.sampler == "solver" else None
        return {"solver": solver, "final": "sigma_min" if final == "sigma_min" else "solver"}

    def _check_tuned_variant(self) -> None:
        """UniPC bh1 on a tuned grid fitted for bh2 or DPM-Solver++(2M) blurs: 1.2-2.4x the RMSE of bh1's best
        fixed grid at NFE 4-8 and up to 6x the rows moved into the rare mode (docs/lownfe.md, "UniPC bh1 and the
        tuned grids"). Refused rather than redirected: the run would not be the one asked for."""
        if not (self.grid == "tuned" and self.sampler == "solver" and self.solver == "unipc"
                and self.solver_options.get("variant") == "bh1"):
            return
        fitted_for = self.grid_options["solver"]
        if fitted_for not in BH1_TUNED_GRIDS:
            raise ValueError(
                f"solver_options.variant='bh1' with grid='tuned' and grid_options.solver={fitted_for!r}: that grid "
                f"was fitted for {fitted_for} in its default setting (unipc: variant bh2) and blurs with bh1 (up to "
                f"2.4x the RMSE of bh1 on a fixed grid at NFE 4-8); "
                f"allowed: solver_options.variant='bh2', grid_options.solver in {list(BH1_TUNED_GRIDS)}, or a fixed "
                f"grid {list(catalog.FIXED_GRIDS)} or 'custom'")

    def _check_guidance_interval(self) -> None:
        gi = self.guidance_interval
        if gi is None:
            return
        if not isinstance(gi, (tuple, list)) or len(gi) != 2:
            raise ValueError(f"guidance_interval={gi!r} must be [sigma_lo, sigma_hi] or null")
        lo, hi = _finite("guidance_interval[0]", gi[0], 0.0), _finite("guidance_interval[1]", gi[1], 0.0)
        if not lo < hi:
            raise ValueError(f"guidance_interval={list(gi)!r} must have sigma_lo < sigma_hi")
        object.__setattr__(self, "guidance_interval", (lo, hi))

    def _check_speedups(self) -> None:
        if self.parallel == "picard":
            if self.sampler != "solver" or self.solver not in catalog.PICARD_SOLVERS or (
                    self.solver == "ddim" and self.solver_options.get("eta", 0.0) != 0.0):
                raise ValueError(f"parallel='picard' with solver={self.solver!r}: Picard iteration needs a deterministic "
                                 f"one-evaluation-per-step solver; allowed: {list(catalog.PICARD_SOLVERS)} (ddim with "
                                 "eta=0)")
            if self.feature_cache != "off":
                raise ValueError(f"feature_cache={self.feature_cache!r} with parallel='picard': a window evaluates "
                                 "several steps in one forward, so there is no previous step to reuse; allowed: 'off'")
        if self.precision == "int8" and self.device == "cuda":
            raise ValueError("precision='int8' (dynamic quantisation) runs on CPU only; device='cuda'; "
                             "allowed: device 'cpu' or 'auto' without a GPU, or precision 'bfloat16'")

    def _check_gate(self) -> None:
        if isinstance(self.gate_alpha, bool) or not isinstance(self.gate_alpha, (int, float)) or not (
                0.0 < self.gate_alpha < MAX_GATE_ALPHA):
            raise ValueError(f"gate_alpha={self.gate_alpha!r} must be a number in (0, {MAX_GATE_ALPHA:g}) (the gate's "
                             f"family-wise error rate; default {GATE_ALPHA:g})")
        object.__setattr__(self, "gate_alpha", float(self.gate_alpha))
        if self.gate_cap is None:
            return
        look = self.samples * self.plans * self.futures
        if isinstance(self.gate_cap, bool) or not isinstance(self.gate_cap, int) or not (
                look <= self.gate_cap <= MAX_SAMPLES * look) or self.gate_cap % look:
            raise ValueError(f"gate_cap={self.gate_cap!r} must be null or a multiple of samples x plans x futures = "
                             f"{self.samples} x {self.plans} x {self.futures} = {look:,} (the rollouts of one look), "
                             f"of 1 to {MAX_SAMPLES:,} looks: {look:,}, {2 * look:,}, ...")

    @property
    def sequential(self) -> bool:
        """True when the coverage gate samples sequentially (``gate_cap`` set)."""
        return self.gate_cap is not None

    @property
    def max_cycles(self) -> int:
        """Planning cycles (samples) the run may draw: ``samples``, or the cap's worst case when sequential."""
        return self.samples if self.gate_cap is None else self.gate_cap // (self.plans * self.futures)

    # -- JSON ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Mapping):
                v = dict(v)
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, enforce_limits: bool = True) -> "RunSpec":
        if not isinstance(d, Mapping):
            raise ValueError(f"spec must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        version = d.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
            raise ValueError(f"schema_version={version!r} is not readable by this build (reads 1..{SCHEMA_VERSION})")
        while version < SCHEMA_VERSION:
            d = _MIGRATIONS[version](d)
            version += 1
        d["schema_version"] = version
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"spec has unknown field(s) {unknown}; allowed: {sorted(known)}")
        if isinstance(d.get("guidance_interval"), list):
            d["guidance_interval"] = tuple(d["guidance_interval"])
        return cls(**d, enforce_limits=enforce_limits)

    @classmethod
    def from_json(cls, text: str, *, enforce_limits: bool = True) -> "RunSpec":
        return cls.from_dict(parse_json_object(text, "spec"), enforce_limits=enforce_limits)

    def replace(self, **changes: Any) -> "RunSpec":
        """A validated copy with ``changes``. Switching solver, grid or world drops the previous entry's
        options (they belong to it) unless the change gives new ones, so a sweep over grids or solvers
        starts each point from that entry's defaults."""
        d = self.to_dict()
        for entry, options in (("solver", "solver_options"), ("grid", "grid_options"), ("world", "world_options")):
            if entry in changes and changes[entry] != d[entry] and options not in changes:
                d[options] = {}
        if self.grid == "tuned" and "grid_options" not in changes:
            # The tuned grid's options that followed the run (its solver, its last step) follow the new one.
            own = self._tuned_own()
            d["grid_options"] = {k: (None if k in own and v == own[k] else v) for k, v in d["grid_options"].items()}
        d.update(changes)
        return RunSpec.from_dict(d)

    # -- cost --------------------------------------------------------------------------------------

    @property
    def fan_out(self) -> int:
        return self.plans * self.futures


# ---------------------------------------------------------------------------------------------
# The server-side budget: what one run may cost (fastdiff_core.limits holds the settings)
# ---------------------------------------------------------------------------------------------


def picard_window(spec: RunSpec) -> int:
    """Picard evaluates up to ``window`` steps per sequential step (its re-evaluations): the factor of its
    worst case over the NFE bill, in NFE and in rows per network call; 1 for every other sampler."""
    return int(spec.parallel_options.get("window", 1)) if spec.parallel == "picard" else 1


def check_run_limits(spec: RunSpec, limits: RunLimits | None = None) -> None:
    """Refuse a spec whose NFE bill, rollout frames or estimated peak memory exceeds ``limits``
    (default: ``RunLimits.from_env()``). The message names the fields, the product and the limit."""
    from fastdiff_core.budget import bill_for  # budget imports this module

    limits = RunLimits.from_env() if limits is None else limits
    # a guidance interval on a built-in grid is billed as guided everywhere: an upper bound, torch-free
    bill = bill_for(spec, guided_fraction=1.0)  # a sequential gate's worst case: every look up to gate_cap
    samples = "samples" if spec.gate_cap is None else "gate_cap / (plans x futures)"
    window = picard_window(spec)
    picard = (f" x window (Picard's worst case)", f" x {window}") if window > 1 else ("", "")
    if bill.per_run * window > limits.max_run_nfe:
        raise ValueError(
            f"NFE bill S x C x horizon x plans x futures x {samples}{picard[0]} = {bill.S:g} x {bill.C:g} x "
            f"{spec.horizon} x {spec.plans} x {spec.futures} x {spec.max_cycles}{picard[1]} = "
            f"{bill.per_run * window:,.0f} (steps={spec.steps}, "
            f"solver={spec.solver!r}, guidance_scale={spec.guidance_scale:g}) exceeds FASTDIFF_MAX_RUN_NFE="
            f"{limits.max_run_nfe:,.0f}; lower a field or raise the limit")
    rollouts = spec.max_cycles * spec.plans * spec.futures
    frames = rollouts * spec.horizon
    if frames > limits.max_rollouts:
        raise ValueError(
            f"rollout frames {samples} x plans x futures x horizon = {spec.max_cycles} x {spec.plans} x {spec.futures} x "
            f"{spec.horizon} = {frames:,} exceeds FASTDIFF_MAX_ROLLOUTS={limits.max_rollouts:,}; "
            "lower a field or raise the limit")
    chunk = min(limits.chunk_rollouts, int(spec.world_options.get("batch", limits.chunk_rollouts)))
    peak = peak_memory_mb(spec.world, rollouts=rollouts, horizon=spec.horizon, chunk=chunk,
                          guidance_passes=bill.C * window, itemsize=8 if spec.dtype == "float64" else 4)
    if peak > limits.max_peak_mb:
        raise ValueError(
            f"estimated peak memory {peak:,.0f} MiB for samples x plans x futures = {rollouts:,} rollouts of "
            f"horizon={spec.horizon} frames (dtype={spec.dtype!r}, {chunk} rollouts per forward) exceeds "
            f"FASTDIFF_MAX_PEAK_MB={limits.max_peak_mb:,.0f}; lower a field or raise the limit (docs/limits.md)")


def parse_json_object(text: Any, what: str) -> Any:
    """``json.loads`` whose every failure is a one-line ValueError naming ``what``."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise ValueError(f"{what} must be JSON text, got {type(text).__name__}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise ValueError(f"{what} nests too deeply to be a RunSpec (JSON objects and lists nested "
                         f"more than about {sys.getrecursionlimit()} levels)") from None


def _check_custom_sigmas(sigmas: Any, steps: int) -> None:
    if not isinstance(sigmas, list) or len(sigmas) < 1:
        raise ValueError(f"grid_options.sigmas={sigmas!r} must be a non-empty list of decreasing sigmas")
    prev = math.inf
    for i, s in enumerate(sigmas):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
            raise ValueError(f"grid_options.sigmas[{i}]={s!r} must be a finite number >= 0")
        if not s < prev:
            raise ValueError(f"grid_options.sigmas must be strictly decreasing; sigmas[{i}]={s!r} >= sigmas[{i-1}]={prev!r}")
        prev = s
    nonzero = len(sigmas) - (sigmas[-1] == 0)
    if nonzero != steps:
        raise ValueError(f"steps={steps} but grid_options.sigmas has {nonzero} nonzero sigmas; they must agree "
                         f"(steps={nonzero} for these sigmas)")


# Upgrades from version k to k+1 (dict -> dict). Add one per schema bump.
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


# ---------------------------------------------------------------------------------------------
# Progress and results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What ``execute`` reports while running: units done of total, NFE spent so far, an ETA."""

    done: int
    total: int
    nfe: float
    eta_s: float | None
    phase: str = "sampling"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class RunResult:
    """Everything a run measured, JSON-serialisable.

    NFE, one unit for every world: ``nfe_counted`` (every per-sample network evaluation the counter saw)
    and ``nfe_formula`` (the budget's bill) are per RUN; per-sample and per-cycle figures are metrics named
    as such (``nfe_per_sample``, ``nfe_per_cycle``).
    metrics: flat name -> number (e.g. ``rmse``, ``rare_rate``, ``tv``); histograms: rows of
    {group, label, count, n, rate, lo, hi, truth}; latency: rows of {what, seconds, batch, device};
    samples: a small preview (<= a few hundred rows) for plots; verdict: regime verdict or None.
    """

    spec: RunSpec
    device: str
    wall_s: float
    nfe_counted: float
    nfe_formula: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    histograms: tuple[Mapping[str, Any], ...] = ()
    latency: tuple[Mapping[str, Any], ...] = ()
    samples: tuple[tuple[float, ...], ...] = ()
    verdict: Mapping[str, Any] | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = RESULT_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "spec": self.spec.to_dict(),
            "device": self.device,
            "wall_s": self.wall_s,
            "nfe_counted": self.nfe_counted,
            "nfe_formula": self.nfe_formula,
            "metrics": dict(self.metrics),
            "histograms": [dict(r) for r in self.histograms],
            "latency": [dict(r) for r in self.latency],
            "samples": [list(r) for r in self.samples],
            "verdict": dict(self.verdict) if self.verdict is not None else None,
            "info": dict(self.info),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunResult":
        d = upgrade_result(d)
        return cls(
            spec=RunSpec.from_dict(d["spec"], enforce_limits=False),  # a record of a run that happened
            device=d["device"],
            wall_s=float(d["wall_s"]),
            nfe_counted=float(d["nfe_counted"]),
            nfe_formula=float(d["nfe_formula"]),
            metrics=dict(d.get("metrics", {})),
            histograms=tuple(d.get("histograms", ())),
            latency=tuple(d.get("latency", ())),
            samples=tuple(tuple(r) for r in d.get("samples", ())),
            verdict=d.get("verdict"),
            info=dict(d.get("info", {})),
            schema_version=int(d["schema_version"]),
        )

    @classmethod
    def from_json(cls, text: str) -> "RunResult":
        return cls.from_dict(json.loads(text))


def upgrade_result(d: Mapping[str, Any]) -> dict[str, Any]:
    """A RunResult's JSON dict at ``RESULT_SCHEMA_VERSION`` (a copy). Version 1 stored the mixture world's
    NFE per sample; version 2 stores every world's per run (x samples). Torch-free: the store upgrades
    the rows it builds from result files with it too."""
    d = dict(d)
    version = d.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= RESULT_SCHEMA_VERSION:
        raise ValueError(f"result schema_version={version!r} is not readable by this build "
                         f"(reads 1..{RESULT_SCHEMA_VERSION})")
    if version < 2:
        spec = d.get("spec") or {}
        samples = spec.get("samples", 1) if isinstance(spec, Mapping) else 1
        if isinstance(spec, Mapping) and spec.get("world", "mixture") == "mixture" and isinstance(samples, int):
            for key in ("nfe_counted", "nfe_formula"):
                if isinstance(d.get(key), (int, float)) and not isinstance(d.get(key), bool):
                    d[key] = float(d[key]) * samples
    d["schema_version"] = RESULT_SCHEMA_VERSION
    return d
