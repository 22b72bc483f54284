"""``fastdiff run``: build a RunSpec from flags (or --spec JSON / a JSON file), execute it, print the
RunResult as a table (or as JSON with --json)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from fastdiff_core import budget
from fastdiff_cli.args import float_range, int_range
from fastdiff_core.models import model_registry
from fastdiff_core.spec import FIELDS, MODEL_WORLD, RunResult, RunSpec, field_choices, parse_json_object

MAX_SPEC_FILE_BYTES = 1_000_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", help="a RunSpec as JSON text or a path to a JSON file (flags below override it)")
    p.add_argument("--world", choices=sorted(field_choices("world")))
    p.add_argument("--preset", help="world_options.preset")
    p.add_argument("--path", help="world_options.path (noise path)")
    p.add_argument("--prediction", help="world_options.prediction")
    p.add_argument("--condition", help="world_options.condition")
    p.add_argument("--model", help="a registered model's name, or a diffusers-format directory or 'module:function' "
                                   "(registered on first use; sets --world model)")
    p.add_argument("--label", type=int, help="world_options.label (world model: the class to sample, -1 every class)")
    p.add_argument("--modes", help="world_options.modes (world model: auto | classifier)")
    p.add_argument("--solver", choices=sorted(FIELDS["solver"].choices))
    p.add_argument("--solver-option", action="append", default=[], metavar="KEY=JSON",
                   help="a solver option, e.g. eta=0.5 (repeatable)")
    p.add_argument("--grid", choices=sorted(FIELDS["grid"].choices))
    p.add_argument("--grid-option", action="append", default=[], metavar="KEY=JSON",
                   help="a grid option, e.g. rho=5 or sigmas=[80,10,1,0.1] (repeatable)")
    p.add_argument("--steps", type=_int_field("steps"))
    p.add_argument("--guidance", type=float, dest="guidance_scale")
    p.add_argument("--samples", type=_int_field("samples"))
    for name, what in (("horizon", "H, frames per rollout"), ("plans", "P, candidate plans per cycle"),
                       ("futures", "R, futures per plan")):
        p.add_argument(f"--{name}", type=_int_field(name), help=f"{what} (worlds with rollouts)")
    p.add_argument("--scene", help="the driving world's scene (fastdiff world-scenes lists them)")
    p.add_argument("--regime", choices=sorted(FIELDS["regime"].choices), help="the regime the run is judged in")
    p.add_argument("--seed", type=_int_field("seed"))
    p.add_argument("--gate-cap", type=int_range(1), dest="gate_cap",
                   help="sequential coverage gate: sample looks of samples x plans x futures rollouts until every "
                        "check is decided, at most this many rollouts (a multiple of the look; driving world)")
    alpha = FIELDS["gate_alpha"]
    p.add_argument("--gate-alpha", type=float_range(alpha.min, alpha.max, lo_open=not alpha.min_inclusive,
                                                    hi_open=not alpha.max_inclusive), dest="gate_alpha",
                   help="the coverage gate's family-wise error rate, in (0, 0.5) (default 0.05)")
    p.add_argument("--dtype", choices=FIELDS["dtype"].choices)
    p.add_argument("--device", choices=FIELDS["device"].choices)
    p.add_argument("--json", action="store_true", help="print the RunResult as JSON")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the spec (fields, limits, the world's support, the device) and print it as JSON "
                        "without running it")


def _int_field(name: str):
    """A flag's type for RunSpec field ``name``: an integer within the field's declared bounds."""
    return int_range(FIELDS[name].min, FIELDS[name].max)


def _options(pairs: list[str], flag: str) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"{flag}={pair!r} must look like KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _spec_text(spec: str) -> tuple[str, str]:
    """--spec as (JSON text, what to call it in a message): a file's content, or the text itself."""
    if spec.lstrip().startswith(("{", "[")):
        return spec, "--spec"
    if os.path.isdir(spec):
        raise ValueError(f"--spec={spec!r} is a directory; expected a RunSpec as JSON text or a path to a JSON file")
    if not os.path.exists(spec):
        raise ValueError(f"--spec={spec!r} is neither an existing file nor JSON text (a RunSpec starts with '{{')")
    try:
        if os.path.getsize(spec) > MAX_SPEC_FILE_BYTES:
            raise ValueError(f"--spec={spec!r} is larger than {MAX_SPEC_FILE_BYTES:,} bytes; a RunSpec is a few KB")
        with open(spec, encoding="utf-8") as f:
            return f.read(), f"--spec file {spec!r}"
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--spec={spec!r} cannot be read ({type(e).__name__}: {e}); expected a readable JSON file") from None


def model_name(value: str) -> str:
    """--model as a registry name: a registered (or entry-point) name as is; a directory or 'module:function'
    by the name it is registered under, registering it first if it is not (specs carry names, not paths)."""
    if value in model_registry.registered():
        return value
    if os.path.isdir(value) or ":" in value:
        from fastdiff_core.models.loading import register_model

        source = os.path.realpath(value) if os.path.isdir(value) else value
        return model_registry.find_source(source) or register_model(value)["name"]
    raise ValueError(f"--model={value!r} is not a registered model, a directory or 'module:function'; registered: "
                     f"{list(model_registry.model_names())}")


def _check_model_flag(args: argparse.Namespace, name: str, d: dict[str, Any], what: str) -> None:
    """--model sets the world 'model' and the model: a --world flag, or a --spec that names another world
    or another model, contradicts it and is refused naming both values (never one silently winning)."""
    if args.world is not None and args.world != MODEL_WORLD:
        raise ValueError(f"--model={args.model!r} runs the world {MODEL_WORLD!r}, but --world={args.world!r}; "
                         "drop one of them")
    if d.get("world", MODEL_WORLD) != MODEL_WORLD:
        raise ValueError(f"--model={args.model!r} runs the world {MODEL_WORLD!r}, but {what} sets "
                         f"world={d['world']!r}; drop one of them")
    if d.get("model") is not None and d["model"] != name:
        raise ValueError(f"--model={args.model!r} (model {name!r}) conflicts with model={d['model']!r} in {what}; "
                         "drop one of them")


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The --spec's own fields (as written, so the defaults of the final world and solver apply), then
    the flags over them; --model merges with the spec (a conflict is refused, naming both values)."""
    d: dict[str, Any] = {}
    what = "--spec"
    if args.spec:
        text, what = _spec_text(args.spec)
        d = dict(parse_json_object(text, what))
    if args.model is not None:
        name = model_name(args.model)
        _check_model_flag(args, name, d, what)
        d["world"], d["model"] = MODEL_WORLD, name
    for name in ("world", "scene", "solver", "grid", "steps", "guidance_scale", "horizon", "plans", "futures",
                 "samples", "seed", "dtype", "device", "regime", "gate_cap", "gate_alpha"):
        if getattr(args, name) is not None:
            d[name] = getattr(args, name)
    world_options = dict(d.get("world_options", {}))
    for name in ("preset", "path", "prediction", "condition", "label", "modes"):
        if getattr(args, name) is not None:
            world_options[name] = getattr(args, name)
    if world_options:
        d["world_options"] = world_options
    if args.solver_option:
        d["solver_options"] = {**d.get("solver_options", {}), **_options(args.solver_option, "--solver-option")}
    if args.grid_option:
        d["grid_options"] = {**d.get("grid_options", {}), **_options(args.grid_option, "--grid-option")}
    if args.solver is not None and not args.solver_option and "solver_options" in d and args.spec:
        d["solver_options"] = {}  # options of the spec's old solver do not carry over to a new one
    return RunSpec.from_dict(d)


def format_result(r: RunResult) -> str:
    s = r.spec
    lines = [
        f"world {s.world} {dict(s.world_options)}",
        f"solver {s.solver} {dict(s.solver_options)}  grid {s.grid} {dict(s.grid_options)}  steps {s.steps}  "
        f"guidance {s.guidance_scale}  samples {s.samples}  dtype {s.dtype}",
        f"device {r.device}  wall {r.wall_s:.2f}s  NFE counted {r.nfe_counted:g}  NFE formula {r.nfe_formula:g} (per run)",
        "",
        f"{'metric':<18}{'value':>14}",
    ]
    lines += [f"{k:<18}{v:>14.6g}" for k, v in r.metrics.items()]
    seq = r.info.get("sequential")
    if seq:
        per = "plan" if s.plans > 1 else "scene"  # a planning run gates each candidate plan
        lines += ["", f"sequential gate: {seq['outcome']} ({seq['stopped']}) after {seq['looks']} look(s) of "
                      f"{seq['look']:,}: rollouts per {per} {seq['rollouts']} (cap {seq['cap']:,}, "
                      f"alpha {seq['alpha']:g})"]
    if r.histograms:
        lines += ["", f"{'group':<11}{'mode':<9}{'count':>7}{'rate':>9}{'95% CI':>19}{'truth':>8}"]
        for h in r.histograms:  # a world without ground truth (a user's model) has no truth, maybe no interval
            ci = "-" if h.get("lo") is None else f"[{h['lo']:.4f}, {h['hi']:.4f}]"
            truth = "-" if h.get("truth") is None else f"{h['truth']:.4f}"
            lines.append(f"{h['group']:<11}{h['label']:<9}{h['count']:>7}{h['rate']:>9.4f}{ci:>19}{truth:>8}")
    if r.latency:
        lines += ["", f"{'latency':<12}{'seconds':>12}{'batch':>8}  device"]
        lines += [f"{row['what']:<12}{row['seconds']:>12.6f}{row['batch']:>8}  {row['device']}" for row in r.latency]
    projected, measured = budget.stored_verdicts(r.verdict)
    for heading, v in (("projected verdict (before the run)", projected), ("measured verdict", measured)):
        if v is not None:
            lines += ["", f"{heading}: {v.status.upper()}", v.sentence]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """ValueError (a bad flag or spec) goes to ``workers.cli``, which prints it as one line and exits 2."""
    from fastdiff_core.run import execute, resolve_device

    spec = spec_from_args(args)
    spec.runnable()  # what the world supports (horizon on the mixture, guidance without a condition)
    resolve_device(spec.device)  # --device cuda without a GPU is refused here, before the world loads
    if args.dry_run:
        print(spec.to_json())
        return 0
    result = execute(spec)
    print(result.to_json() if args.json else format_result(result))
    return 0
