"""How fast RunSpec validation is, ours beside pydantic v2, in one run (docs/schema.md has the figures).

    PYTHONPATH=.:/path/to/pydantic python tools/bench_spec_validation.py [--n 20000]

pydantic is not a dependency of fastdiff: install it anywhere (``pip install --target DIR 'pydantic>=2,<3'``)
and put that directory on PYTHONPATH. The pydantic model is generated from the same declarations
(``fastdiff_core.spec.FIELDS``: strict types, bounds, choices), so both sides check the same field-level
rules; the cross-field rules (scene, options, students, picard, the run limits) are the same code
either way and are timed once, as the whole of ``RunSpec.from_dict``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, Literal, Optional

from fastdiff_core.spec import _CHECKED_WITH_OTHERS, FIELDS, RunSpec, _check_field, field_choices


PYDANTIC_BOUNDS = {"minimum": "ge", "exclusiveMinimum": "gt", "maximum": "le", "exclusiveMaximum": "lt",
                   "maxLength": "max_length"}  # JSON schema keyword -> pydantic Field argument


def pydantic_model() -> Any:
    """A pydantic model of RunSpec's scalar fields, strict, with FIELDS' bounds and choices."""
    from pydantic import ConfigDict, Field, create_model

    kinds = {int: int, float: float, bool: bool, str: str}
    fields: dict[str, Any] = {}
    for name, opt in FIELDS.items():
        choices = field_choices(name)
        kind: Any = Literal[tuple(choices)] if choices is not None else kinds[opt.type]
        declared = opt.json_schema()
        bounds: dict[str, Any] = {arg: declared[key] for key, arg in PYDANTIC_BOUNDS.items() if key in declared}
        if opt.type is float:
            bounds["allow_inf_nan"] = False
        fields[name] = (Optional[kind] if opt.nullable else kind, Field(opt.default, **bounds))
    return create_model("RunSpecFields", __config__=ConfigDict(strict=True, extra="ignore"), **fields)


def ours(d: dict[str, Any]) -> None:
    for name, opt in FIELDS.items():
        if name not in _CHECKED_WITH_OTHERS:
            _check_field(name, opt, d.get(name, opt.default))


def rate(fn: Callable[[], Any], n: int) -> float:
    fn()
    best = 0.0
    for _ in range(5):  # the best of five: the least disturbed by other processes
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000)
    args = p.parse_args()
    d = RunSpec(solver="ddim", steps=12, guidance_scale=2.0, regime="offline", samples=500).to_dict()
    model = pydantic_model()
    model.model_validate(d)
    ours_rate = rate(lambda: ours(d), args.n)
    pyd_rate = rate(lambda: model.model_validate(d), args.n)
    full = rate(lambda: RunSpec.from_dict(d), args.n // 4)
    print(f"field-level validation, ours (fastdiff_core.spec._check_field): {ours_rate:12,.0f} specs/s "
          f"({1e6 / ours_rate:6.1f} us)")
    print(f"field-level validation, pydantic {__import__('pydantic').VERSION} strict model:  {pyd_rate:12,.0f} specs/s "
          f"({1e6 / pyd_rate:6.1f} us)")
    print(f"RunSpec.from_dict (field-level + cross-field + limits):        {full:12,.0f} specs/s "
          f"({1e6 / full:6.1f} us)")
    print(f"field-level share of from_dict: ours {full / ours_rate:.0%}, pydantic would be {full / pyd_rate:.0%}")


if __name__ == "__main__":
    main()
