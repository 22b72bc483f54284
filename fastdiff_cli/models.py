"""``fastdiff models list|add|remove``: the model registry (``$FASTDIFF_HOME/models.json``).

``add`` loads the model once (a diffusers-format directory, or 'module:function' for a PyTorch module),
so a broken one is refused here with one line naming the file or field, then records its name, source,
kind, weights checksum, interface and card. Runs name models by their registry name.
"""

from __future__ import annotations

import argparse
import json

from fastdiff_core.models import model_registry
from fastdiff_core.models.loading import register_model


def add_arguments(p: argparse.ArgumentParser) -> None:
    action = p.prog.split()[-1]
    p.set_defaults(action=action)
    if action == "add":
        p.add_argument("source", help="a diffusers-format directory, or 'module:function' returning a ModuleModel")
        p.add_argument("--name", help="registry name (default: the directory's name)")
        p.add_argument("--replace", action="store_true", help="replace a registered model of the same name")
    elif action == "remove":
        p.add_argument("name")
    else:
        p.add_argument("--json", action="store_true", help="print the registry entries as JSON")


def _table(models: dict) -> str:
    lines = [f"{'name':<24}{'kind':<13}{'prediction':<11}{'path':<15}{'shape':<14}{'classes':>8}  sha256"]
    for name, e in sorted(models.items()):
        i = e.get("interface") or {}
        shape = "x".join(map(str, i.get("sample_shape", []))) or "?"
        lines.append(f"{name:<24}{e['kind']:<13}{i.get('prediction', '?'):<11}{(i.get('path') or {}).get('kind', '?'):<15}"
                     f"{shape:<14}{i.get('num_classes', 0) if i else '?':>8}  {(e.get('checksum') or '-')[:16]}")
        lines.append(f"{'':<24}{e.get('source', '')}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.action == "add":
        entry = register_model(args.source, args.name, replace=args.replace)
        print(f"added {entry['name']} ({entry['kind']}, sha256 {entry['checksum'][:16]}...) from {entry['source']}")
    elif args.action == "remove":
        entry = model_registry.remove(args.name)
        print(f"removed {entry['name']} ({entry['source']}; its files are untouched)")
    else:
        models = model_registry.registered()
        print(json.dumps(models, indent=1, sort_keys=True) if args.json else
              _table(models) if models else f"no models registered in {model_registry.registry_file()}; "
              "add one with `fastdiff models add PATH`")
    return 0
