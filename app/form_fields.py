"""The form's fields, defined once: their type, default, label and allowed range or choices.

The widgets of Explore and Sweep draw their bounds from here, and a value that arrives in a link's
query parameters is checked against the same definition before it reaches the form: a value out of
range, not finite, of the wrong type or not among the choices is refused with a message naming the
field, the value and what is allowed, never coerced (``url_value``). Pure: no Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from fastdiff_core import catalog
from fastdiff_core.registry import Option
from fastdiff_core.spec import FIELDS as SPEC_FIELDS
from fastdiff_core.spec import field_choices


@dataclass(frozen=True)
class Field:
    """A form field: its label on the page and its ``Option`` (type, default, range or choices)."""

    label: str
    option: Option

    @property
    def default(self) -> Any:
        return self.option.default


def _int(default: int, label: str, lo: int, hi: int, doc: str = "") -> Field:
    return Field(label, Option(int, default, doc, min=lo, max=hi))


def _float(default: float, label: str, lo: float, hi: float, doc: str = "") -> Field:
    return Field(label, Option(float, default, doc, min=lo, max=hi))


def _bool(default: bool, label: str) -> Field:
    return Field(label, Option(bool, default))


def _text(default: str | None, label: str, choices: tuple[str, ...] | None = None) -> Field:
    return Field(label, Option(str, default, choices=choices, nullable=default is None))


def _spec(name: str, label: str, default: Any = None, **narrower: Any) -> Field:
    """A RunSpec field as the form shows it: its declaration (``spec.FIELDS``: type, bounds, choices), with
    the form's own default and, where a widget needs one, a narrower bound (``narrower``)."""
    opt = SPEC_FIELDS[name]
    choices = field_choices(name)
    return Field(label, replace(opt, default=opt.default if default is None else default, choices=choices,
                                nullable=opt.nullable and default is None, **narrower))


MAX_SEED = 2**53 - 1  # the largest integer a browser's number field holds exactly
MAX_NAME = SPEC_FIELDS["name"].max_length

# Choices that depend on the chosen world (scene, the world's options) are checked by ``world_value``.
FIELDS: dict[str, Field] = {
    "regime": _spec("regime", "Regime", "offline"),
    "sampler": _spec("sampler", "Family"),
    "solver": _spec("solver", "Solver"),
    "grid": Field("Grid", replace(SPEC_FIELDS["grid"], choices=tuple(g for g in catalog.GRIDS if g != "custom"))),
    "student": _spec("student", "Student"),
    "steps": _spec("steps", "Steps", 20),
    "guidance_scale": _spec("guidance_scale", "Guidance scale", max=50.0),  # the widget's bound; RunSpec has none
    "interval_on": _bool(False, "Guidance interval"),
    "interval_lo": _float(0.3, "sigma lo", 0.0, 1000.0),
    "interval_hi": _float(5.0, "sigma hi", 0.0, 1000.0),
    "guided_fraction": _float(0.5, "Share of evaluations guided (estimate)", 0.0, 1.0),
    "horizon": _spec("horizon", "Horizon H (frames)"),
    "plans": _spec("plans", "Plans P"),
    "futures": _spec("futures", "Futures R per plan"),
    "world": _spec("world", "World"),
    "scene": _text(None, "Scene"),
    "model": _text(None, "Model"),  # a registered model's name (RunSpec checks it against the registry)
    "preset": _text("rare2d", "preset"),
    "path": _text("vp_linear", "path"),
    "prediction": _text("eps", "prediction"),
    "condition": _text("none", "condition"),
    "seed": _spec("seed", "Seed", max=MAX_SEED),
    "samples": _spec("samples", "Rollouts (samples)", 2000),
    # sequential coverage gate (RunSpec.gate_cap / gate_alpha): 0 = one fixed sample of `samples` cycles
    "gate_cap": _int(0, "Sequential gate: most rollouts (0 = fixed n)", 0, 10**12),
    "gate_alpha": _spec("gate_alpha", "Gate family-wise error rate", min=0.0001, max=0.49, min_inclusive=True,
                        max_inclusive=True),  # a number widget's closed bounds inside RunSpec's (0, 0.5)
    "per_nfe_ms": _float(10.0, "Per-NFE latency (ms)", 0.01, 10_000.0),
    "parallelism": _int(1, "Parallel lanes", 1, 100_000),
    "usd_per_hour": _float(2.0, "$ per accelerator-hour", 0.0, 10_000.0),
    "name": _spec("name", "Name (optional)"),
}
# The Budget calculator's fields (query parameter = the name after "bc.").
BUDGET_FIELDS: dict[str, Field] = {
    "S": _int(4, "S (NFE per frame)", 1, 100_000),
    "C": _float(1.0, "C (guidance passes)", 1.0, 2.0),
    "H": _int(12, "H (frames)", 1, 10_000),
    "P": _int(10, "P (plans)", 1, 100_000),
    "R": _int(4, "R (futures per plan)", 1, 100_000),
    "ms": _float(10.0, "Per-NFE latency (ms)", 0.01, 100_000.0),
    "lanes": _int(1, "Parallel lanes", 1, 1_000_000),
    "usd": _float(2.0, "$ / accelerator-hour", 0.0, 10_000.0),
    "budget_ms": _float(100.0, "Latency budget (ms)", 1.0, 3_600_000.0),
    "cost_budget": _float(0.15, "Cost budget ($ / 1,000 scenarios)", 0.0, 1_000_000.0),
    "distilled": _bool(True, "S comes from a distilled student"),
}
WORLD_FIELDS = ("scene", "preset", "path", "prediction", "condition")  # checked against the chosen world


def _typed(option: Option, raw: str) -> Any:
    """``raw`` (a query parameter) as ``option.type``, or ValueError: booleans are 1/0/true/false, an
    integer has no decimal point or exponent, a number is any float() text (then checked finite)."""
    if option.type is bool:
        if raw in ("1", "true", "True"):
            return True
        if raw in ("0", "false", "False"):
            return False
        raise ValueError(raw)
    if raw == "" and option.nullable:
        return None
    if option.type is int:
        return int(raw.strip())
    if option.type is float:
        return float(raw.strip())
    return raw


def allowed(option: Option) -> str:
    """What a link may give for ``option``, as the refusal says it."""
    if option.type is bool:
        return "1 or 0"
    if option.type is str and option.choices is None:
        return "text"
    return option.allowed()


def check_value(name: str, option: Option, raw: str, label: str | None = None) -> Any:
    """The value of query parameter ``name`` (raw text) checked against ``option``; a ValueError whose
    message names the parameter, the value as written and what is allowed."""
    shown = raw if len(raw) <= 40 else raw[:40] + "…"
    where = f"{label} ({name})" if label and label != name else name
    try:
        value = _typed(option, raw)
    except ValueError:
        raise ValueError(f"{where}={shown!r} in the link is not allowed; expected {allowed(option)}") from None
    try:
        return option.check(name, value)
    except ValueError:
        raise ValueError(f"{where}={shown!r} in the link is not allowed; expected {allowed(option)}") from None


def url_value(name: str, raw: str) -> Any:
    """A form field's value from a link (see ``check_value``)."""
    f = FIELDS[name]
    if name == "name" and len(raw) > MAX_NAME:
        raise ValueError(f"{f.label} ({name}) in the link has {len(raw)} characters; at most {MAX_NAME} are allowed")
    return check_value(name, f.option, raw, f.label)


def world_value(name: str, raw: str, world: str) -> Any:
    """A scene or world option from a link, checked against the choices of ``world``."""
    info = catalog.WORLDS[world]
    if name == "scene":
        if raw == "" and not info.scenes:
            return None
        if not info.scenes:
            raise ValueError(f"Scene (scene)={raw!r} in the link is not allowed: world {world!r} has no scenes")
        return check_value(name, Option(str, info.scenes[0], choices=tuple(info.scenes)), raw, "Scene")
    opt = info.options.get(name)
    if opt is None:
        raise ValueError(f"{name}={raw!r} in the link is not allowed: world {world!r} has no option {name!r}")
    return check_value(name, opt, raw)


def checked(fields: Mapping[str, Field], params: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The values ``params`` gives for ``fields`` (others ignored) and one refusal per value not allowed."""
    values: dict[str, Any] = {}
    refused: list[str] = []
    for name, raw in params.items():
        if name in fields:
            try:
                values[name] = check_value(name, fields[name].option, raw, fields[name].label)
            except ValueError as e:
                refused.append(str(e))
    return values, refused


def url_values(params: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The form fields a link sets (world-dependent ones checked against the world the link chooses,
    else the default world) and the refusals, one message per refused parameter."""
    values, refused = checked({n: f for n, f in FIELDS.items() if n not in WORLD_FIELDS and n != "name"}, params)
    if "name" in params:
        try:
            values["name"] = url_value("name", params["name"])
        except ValueError as e:
            refused.append(str(e))
    world = values.get("world", FIELDS["world"].default)
    for name in WORLD_FIELDS:
        if name in params:
            try:
                values[name] = world_value(name, params[name], world)
            except ValueError as e:
                refused.append(str(e))
    return values, refused
