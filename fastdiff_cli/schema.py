"""``fastdiff schema``: the JSON schema of a RunSpec, generated from the declarations RunSpec validates
with (``fastdiff_core.schema``), and of the service's messages (``workers.messages``); ``--write`` writes
the published files docs/schema/runspec.schema.json and messages.schema.json, ``--check`` exits 1 when
they are out of date."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from fastdiff_core.schema import runspec_schema
from fastdiff_core.worlds import builtin_world_names
from workers.messages import messages_schema

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "schema"


def published() -> dict[str, str]:
    """File name -> its text, as published in docs/schema/ (the worlds that ship with fastdiff; a
    plugin's worlds are in what ``fastdiff schema`` prints where the plugin is installed)."""
    return {"runspec.schema.json": json.dumps(runspec_schema(builtin_world_names()), indent=2) + "\n",
            "messages.schema.json": json.dumps(messages_schema(), indent=2) + "\n"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--write", action="store_true", help=f"write the published schema files to {DOCS}")
    what.add_argument("--check", action="store_true", help="exit 1 if the published files are out of date")


def main(args: argparse.Namespace) -> int:
    if not (args.write or args.check):
        print(json.dumps({"runspec": runspec_schema(), "messages": messages_schema()}, indent=2))
        return 0
    stale = [name for name, text in published().items()
             if not (DOCS / name).exists() or (DOCS / name).read_text() != text]
    if args.check:
        for name in stale:
            print(f"docs/schema/{name} is out of date: run `fastdiff schema --write`", file=sys.stderr)
        return 1 if stale else 0
    DOCS.mkdir(parents=True, exist_ok=True)
    for name, text in published().items():
        (DOCS / name).write_text(text)
        print(f"wrote docs/schema/{name}")
    return 0
