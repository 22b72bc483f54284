"""STYLE.md rule 10, checked: fastdiff_core imports nothing from app/workers/store; store and app
import no torch; workers are the only place where core and store meet."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imported_roots(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                roots.add(arg.value.split(".")[0])
    return roots


def files(package: str) -> list[pathlib.Path]:
    return sorted((ROOT / package).rglob("*.py"))


RULES = {
    "fastdiff_core": {"app", "workers", "store", "streamlit", "celery", "duckdb", "polars"},
    "store": {"torch", "app", "workers", "fastdiff_core.run"},
    "app": {"torch", "workers.tasks"},
}


@pytest.mark.parametrize("package", sorted(RULES))
def test_layer_rules(package):
    banned = {b.split(".")[0] for b in RULES[package] if "." not in b}
    offenders = []
    for f in files(package):
        bad = imported_roots(f) & banned
        if bad:
            offenders.append(f"{f.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_torch_free_core_modules_stay_torch_free():
    # The dashboard reads these without torch.
    import subprocess
    import sys

    code = (
        "import sys; import fastdiff_core.spec, fastdiff_core.catalog, fastdiff_core.registry, fastdiff_core.budget; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
