"""The JSON schema of a RunSpec, generated from the declarations RunSpec validates with. Torch-free.

Every property comes from ``spec.FIELDS`` (type, default, bounds, choices) and the option schemas of the
catalog's solvers, grids, worlds and speed-ups (``registry.Option.json_schema``); the rules that tie
fields together are stated as ``if``/``then`` where JSON schema can say them, and every rule RunSpec
enforces beyond a field's own bounds is listed in the description (``spec.CROSS_FIELD_RULES``).
`fastdiff schema --write` writes it to docs/schema/ (tests/test_schema.py holds the file up to date and
checks that the schema and RunSpec accept the same values).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from fastdiff_core import catalog
from fastdiff_core.registry import Option
from fastdiff_core.spec import (
    CROSS_FIELD_RULES,
    FIELDS,
    MODEL_WORLD,
    OPTION_FIELDS,
    SCHEMA_VERSION,
    field_choices,
)
from fastdiff_core.worlds import world_plugin

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://fastdiff.invalid/schema/runspec.schema.json"  # a name, not a download: the file ships in docs/


def options_object(options: Mapping[str, Option]) -> dict[str, Any]:
    """An option map's JSON schema: the declared options only, each with its type and bounds; an option
    with no default (and not nullable) is required."""
    return {"type": "object", "additionalProperties": False,
            "properties": {name: _option(opt) for name, opt in options.items()},
            **({"required": req} if (req := [n for n, o in options.items() if o.default is None and not o.nullable])
               else {})}


def _option(opt: Option) -> dict[str, Any]:
    out = opt.json_schema()
    if opt.type is list:  # the custom grid's sigmas (their order and count: CROSS_FIELD_RULES)
        out["items"] = {"type": "number", "minimum": 0}
        out["minItems"] = 1
    return out


def _options_then(field: str, options: Mapping[str, Option]) -> dict[str, Any]:
    """A ``then`` clause: option map ``field`` holds ``options``; present when one of them has no default."""
    obj = options_object(options)
    return {"properties": {field: obj}, **({"required": [field]} if "required" in obj else {})}


def _when(field: str, value: Any, *, also: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An ``if`` clause for ``field == value``; a field left out takes its default, so the clause for the
    default value also holds when the field is absent."""
    props = {field: {"const": value}, **(also or {})}
    required = [f for f, v in [(field, value), *[(f, c["const"]) for f, c in (also or {}).items()]]
                if v != FIELDS[f].default]
    return {"properties": props, **({"required": required} if required else {})}


def _world_rules(worlds: Iterable[str]) -> list[dict[str, Any]]:
    rules = []
    for name in worlds:
        info = world_plugin(name).info
        then = _options_then("world_options", info.options)
        then["properties"]["scene"] = {"enum": list(info.scenes)} if info.scenes else {"const": None}
        required = then.pop("required", []) + (["scene"] if info.scenes else [])
        if name == MODEL_WORLD:
            then["properties"]["model"] = {"type": "string"}
            required.append("model")
        else:
            then["properties"]["model"] = {"const": None}
        if required:
            then["required"] = required
        rules.append({"if": _when("world", name), "then": then})
    return rules


def _sampler_rules() -> list[dict[str, Any]]:
    solver = {"sampler": {"const": "solver"}}
    rules = [{"if": _when("solver", name, also=solver), "then": _options_then("solver_options", info.options)}
             for name, info in catalog.SOLVERS.items()]
    rules.append({"if": _when("sampler", "solver"), "then": {"properties": {"student": {"const": None}}}})
    rules.append({"if": _when("sampler", "student"),
                  "then": {"required": ["student"], "properties": {"student": {"type": "string"}}}})
    for name, info in catalog.STUDENTS.items():
        if info.fixed_steps:
            rules.append({"if": _when("student", name, also={"sampler": {"const": "student"}}),
                          "then": {"required": ["steps"], "properties": {"steps": {"enum": list(info.steps)}}}})
    return rules


def _grid_rules() -> list[dict[str, Any]]:
    rules = [{"if": _when("grid", name), "then": _options_then("grid_options", info.options)}
             for name, info in catalog.GRIDS.items()]
    tuned = catalog.TUNED_STEPS
    rules.append({"if": _when("grid", "tuned"),
                  "then": {"properties": {"steps": {"minimum": tuned[0], "maximum": tuned[-1]}}}})
    return rules


def _speedup_rules() -> list[dict[str, Any]]:
    picard = _when("parallel", "picard")
    return [
        {"if": picard, "then": {"properties": {"sampler": {"const": "solver"}, "feature_cache": {"const": "off"},
                                               "solver": {"enum": list(catalog.PICARD_SOLVERS)}}}},
        {"if": _when("parallel", "picard", also={"solver": {"const": "ddim"}}),
         "then": {"properties": {"solver_options": {"properties": {"eta": {"const": 0}}}}}},
        {"if": _when("precision", "int8"), "then": {"properties": {"device": {"not": {"const": "cuda"}}}}},
    ]


def runspec_schema(worlds: Iterable[str] | None = None) -> dict[str, Any]:
    """RunSpec's JSON schema (draft 2020-12) for ``worlds`` (default: every registered world)."""
    worlds = tuple(field_choices("world") if worlds is None else worlds)
    props: dict[str, Any] = {}
    for name, opt in FIELDS.items():
        props[name] = opt.json_schema(choices=worlds if name == "world" else field_choices(name))
    for options, entry in OPTION_FIELDS.items():
        props[options] = {"type": "object", "description": f"the options of the chosen {entry}", "default": {}}
    for name in ("cache_options", "parallel_options", "importance_options"):
        props[name] = {**options_object(catalog.SPEEDUPS[OPTION_FIELDS[name]].options), "default": {}}
    props["guidance_interval"] = {"type": ["array", "null"], "default": None, "minItems": 2, "maxItems": 2,
                                  "items": {"type": "number", "minimum": 0},
                                  "description": "[sigma_lo, sigma_hi]: guidance only where sigma_lo <= sigma <= "
                                                 "sigma_hi; null: everywhere"}
    props["schema_version"] = {"const": SCHEMA_VERSION, "default": SCHEMA_VERSION}
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_ID,
        "title": "RunSpec",
        "description": "One fastdiff experiment run (fastdiff_core.spec.RunSpec). Every field has a default. "
                       "RunSpec also enforces these rules across fields (those JSON schema can state are "
                       "if/then clauses below):\n" + "\n".join(f"- {r}" for r in CROSS_FIELD_RULES),
        "type": "object",
        "additionalProperties": False,
        "properties": {name: props[name] for name in _field_order()},
        "allOf": [*_world_rules(worlds), *_sampler_rules(), *_grid_rules(), *_speedup_rules()],
    }


def _field_order() -> list[str]:
    from dataclasses import fields

    from fastdiff_core.spec import RunSpec

    return [f.name for f in fields(RunSpec)]
