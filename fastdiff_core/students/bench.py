"""``fastdiff bench students``: every shipped student on the driving world, beside the teacher, over seeds.

For each evaluation seed, each student and each of its step counts: NFE per frame (counted), CPU and
wall time per rollout, mean and max branch TV over all scenes, the tail rate, the implausible share,
precision/recall and Vendi diversity, and the three-outcome coverage gate (``metrics.gate``) against
the ground truth and, two-sample, against the teacher's own counts. By default every setting is
sampled sequentially (looks at 250, then x1.5 rollouts per scene, until both gates decide each scene
or ``--cap``); ``--n`` samples a fixed n instead. The teacher curve (DPM-Solver++(2M) at 4-32 steps; its
x 32 setting is the gate reference) is sampled at the cap (or n) per scene in every seed; each student
is compared with it at equal branch TV by interpolating that curve (``metrics.equal_tv``), with a
95% interval over the seeds. Over the seeds, per setting: the gate outcomes, the mean rollouts per
scene, means with Student-t intervals, and paired differences for the comparisons the docs make
(``COMPARISONS``).

With ``--write``: ``weights/students_bench.json``, one model card ``weights/<name>.md`` per student
and the table between the ``students-table`` markers of docs/bench-students.md (tracked files);
without it nothing tracked is written.

    fastdiff bench students --seeds 0,1,2 --cap 1000 --write   # the shipped cards (about 1 h loaded)
    fastdiff bench students --only dmd rcm                     # re-measure some students, keep the others
    fastdiff bench students --weights-dir DIR --seeds 1 --json out.json   # students trained elsewhere
    fastdiff bench students --combine a.json b.json            # tables over runs of several files
    fastdiff bench students --seeds 0 --json s0.json & ... ; fastdiff bench students --combine s0.json s1.json s2.json --write

This module measures, summarises and renders the tracked tables and cards; ``fastdiff_cli.bench_students``
parses the command's flags and prints the progress lines and the table.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Callable

from fastdiff_core import catalog
from fastdiff_core.denoiser import Guidance
from fastdiff_core.metrics.equal_tv import equal_tv_rows
from fastdiff_core.metrics.intervals import t_interval
from fastdiff_core.students.card import StudentProtocol, counts_of, measure
from fastdiff_core.students.driving import WEIGHTS_DIR, checkpoint_file, load_shipped, student_frame_sampler
from fastdiff_core.students.training import TEACHER

ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCH_JSON = WEIGHTS_DIR / "students_bench.json"
TABLE_PAGE = ROOT / "docs" / "bench-students.md"  # the table between the students-table markers
# The teacher curve on the same protocol: DPM-Solver++(2M) steps, the TV-vs-NFE curve that students are
# compared with at equal TV. The last, most accurate setting is also the reference ("the teacher's own
# counts") of every student's second gate.
TEACHER_CURVE = (("dpmpp_2m", 4), ("dpmpp_2m", 6), ("dpmpp_2m", 8), ("dpmpp_2m", 12), ("dpmpp_2m", 16),
                 ("dpmpp_2m", 32))
GUIDED = ("dpmpp_2m", 8, 3.0)  # the guidance student vs the CFG teacher: solver, steps, w
# The comparisons the docs make, as paired differences over seeds: (A, B) settings (student, steps).
COMPARISONS = ((("rcm", 4), ("consistency", 4)), (("rcm", 2), ("consistency", 2)), (("rcm", 1), ("consistency", 1)),
               (("progressive", 8), ("shortcut", 8)), (("reflow", 8), ("shortcut", 8)),
               (("progressive", 4), ("consistency", 4)), (("reflow", 4), ("consistency", 4)),
               (("dmd", 1), ("consistency", 1)))
CONFIDENCE = 0.95
START, END = "<!-- students-table:start -->", "<!-- students-table:end -->"
# Progress: called with ("teacher" | "student", evaluation seed, the measured row) as each setting is done.
OnRow = Callable[[str, int, dict], None]


def _solver(name: str, steps: int):
    from fastdiff_core.worlds.driving import solver_and_grid

    return solver_and_grid(name, steps)


def measure_teacher_curve(protocol: StudentProtocol, on_row: OnRow | None = None) -> list[dict[str, Any]]:
    """Every TEACHER_CURVE setting at the protocol's cap (or n) per scene, the same n for every setting."""
    from fastdiff_core.models.teacher import load_teacher

    net = load_teacher(TEACHER)
    rows = []
    for solver, steps in TEACHER_CURVE:
        fn, sigmas = _solver(solver, steps)
        m = measure(net, protocol, None, solver=fn, sigmas=sigmas, fixed=True)
        rows.append({"solver": solver, "steps": steps, **m})
        if on_row is not None:
            on_row("teacher", protocol.seed, rows[-1])
    return rows


def measure_student(name: str, protocol: StudentProtocol, ref: dict, on_row: OnRow | None = None,
                    weights_dir: pathlib.Path = WEIGHTS_DIR) -> list[dict[str, Any]]:
    """Every measured setting of one student (fresh samples)."""
    info = catalog.STUDENTS[name]
    rows = []
    if info.guidance_input:
        from fastdiff_core.models.teacher import load_teacher

        solver, steps, w = GUIDED
        fn, sigmas = _solver(solver, steps)
        cfg = measure(load_teacher(TEACHER), protocol, None, solver=fn, sigmas=sigmas, guidance=Guidance(w),
                      fixed=True)
        cfg_counts = counts_of(cfg)
        student, facts = load_shipped(name, steps, weights_dir=weights_dir)
        for scale in (1.0, w):
            fs = student_frame_sampler(student, facts, steps, guidance_scale=scale, solver=fn, sigmas=sigmas)
            m = measure(None, protocol, ref if scale == 1.0 else cfg_counts, frame_sampler=fs)
            rows.append(_row(name, steps, facts, m, guidance=scale, solver=solver,
                             cfg_teacher={"nfe_per_frame": cfg["nfe_per_frame"], "mean_tv": cfg["mean_tv"],
                                          "tail_rate": cfg["tail_rate"],
                                          "seconds_per_rollout": cfg["seconds_per_rollout"]}
                             if scale != 1.0 else None))
            if on_row is not None:
                on_row("student", protocol.seed, rows[-1])
        return rows
    for steps in info.steps:
        student, facts = load_shipped(name, steps, weights_dir=weights_dir)
        m = measure(None, protocol, ref, frame_sampler=student_frame_sampler(student, facts, steps))
        rows.append(_row(name, steps, facts, m))
        if on_row is not None:
            on_row("student", protocol.seed, rows[-1])
    return rows


def _row(name: str, steps: int, facts: dict, m: dict, **more: Any) -> dict[str, Any]:
    return {"student": name, "steps": steps, "train_seconds": facts["stats"]["train_seconds"],
            "cumulative_train_seconds": facts.get("cumulative_train_seconds"),
            "total_train_seconds": facts.get("total_train_seconds"), "command": facts["command"],
            "train_seed": facts.get("seed"), "config": facts["config"], **more, **m}


def _protocol_key(protocol: StudentProtocol) -> dict[str, Any]:
    return {"mode": "fixed" if protocol.cap is None else "sequential", "n": None if protocol.cap else protocol.n,
            "cap": protocol.cap, "action": protocol.action, "horizon": protocol.horizon}


def run_bench(only: list[str] | None = None, seeds: tuple[int, ...] = (0, 1, 2), n: int | None = None,
              cap: int | None = 1000, write_readme: bool = True, teacher: bool | None = None,
              on_row: OnRow | None = None, *, write: bool = False, weights_dir: pathlib.Path | None = None,
              on_seed: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Measure (some) students over ``seeds`` and merge them into the shipped bench JSON's data. With
    ``write``: save that JSON, rewrite the cards and (``write_readme``) the docs/bench-students.md table,
    all tracked files; without it nothing tracked is written. ``weights_dir``: students trained
    elsewhere (never written over the shipped results). The teacher curve of a seed is re-measured
    when asked, or when the stored data has none for this protocol and seed."""
    if weights_dir is not None and write:
        raise ValueError("--write with --weights-dir: only the shipped students' results are tracked files")
    base = StudentProtocol(n=n or 2000, cap=None if n else cap)
    key = _protocol_key(base)
    data = json.loads(BENCH_JSON.read_text()) if BENCH_JSON.exists() else {}
    if data.get("protocol") != key:
        data = {"protocol": key, "runs": {}}
    names = only or list(catalog.STUDENTS)
    for seed in seeds:
        protocol = StudentProtocol(n=base.n, cap=base.cap, seed=seed)
        run = data["runs"].get(str(seed))
        if teacher or run is None or not run.get("teacher"):
            run = {"seed": seed, "teacher": measure_teacher_curve(protocol, on_row), "students": {}}
        run["weights"] = "shipped" if weights_dir is None else str(weights_dir)
        ref = counts_of(run["teacher"][-1])
        # students trained elsewhere: only those measured now, never beside shipped ones in one run
        students = {} if weights_dir is not None else {k: v for k, v in run.get("students", {}).items()
                                                       if k not in names}
        for name in names:
            students[name] = measure_student(name, protocol, ref, on_row, weights_dir or WEIGHTS_DIR)
        run["students"] = {k: students[k] for k in catalog.STUDENTS if k in students}
        data["runs"][str(seed)] = run
        if on_seed is not None:  # a checkpoint after every seed (long runs on a shared machine)
            on_seed(data)
    kept = data["runs"] if weights_dir is None else {str(s): data["runs"][str(s)] for s in seeds}
    data["runs"] = {k: kept[k] for k in sorted(kept, key=int)}  # students trained elsewhere: only their runs
    data["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if write:
        write_results(data, write_readme, names)
    return data


def write_results(data: dict, write_readme: bool = True, names: list[str] | None = None) -> None:
    """The tracked files: the bench JSON, the cards of ``names`` (default: every student in every run) and
    (``write_readme``) the docs/bench-students.md table."""
    for run in data["runs"].values():
        for m in [*run["teacher"], *(r for rows in run["students"].values() for r in rows)]:
            for key in ("gate_truth", "gate_teacher"):
                if m.get(key):
                    m[key] = _compact_gate(m[key])
    BENCH_JSON.parent.mkdir(parents=True, exist_ok=True)
    BENCH_JSON.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    for name in names or [k for k in catalog.STUDENTS if all(k in run["students"] for run in data["runs"].values())]:
        (WEIGHTS_DIR / f"{name}.md").write_text(render_card(name, data))
    if write_readme:
        write_table(TABLE_PAGE, render_table(data))


def _compact_gate(gate: dict) -> dict:
    """A stored gate summary without its long check lists: the first failures and how many are undecided
    (the shipped JSON is read by the cards; the full rows are in the run's own --json)."""
    undecided = gate.get("undecided")
    return {**gate, "failures": gate["failures"][:3],
            "undecided": len(undecided) if isinstance(undecided, list) else undecided}


# ---------------------------------------------------------------------------------------------
# Over seeds: one summary per setting, equal-TV rows, paired comparisons (computed once, rendered twice)
# ---------------------------------------------------------------------------------------------


def _settings(data: dict) -> dict[tuple, dict[int, dict]]:
    """(kind, name, steps, guidance) -> {seed: measured row}, teacher settings first, in run order."""
    out: dict[tuple, dict[int, dict]] = {}
    for run in data["runs"].values():
        for c in run["teacher"]:
            out.setdefault(("teacher", c["solver"], c["steps"], None), {})[run["seed"]] = c
        for name, rows in run["students"].items():
            for r in rows:
                out.setdefault(("student", name, r["steps"], r.get("guidance")), {})[run["seed"]] = r
    return out


def _label(key: tuple) -> str:
    kind, name, steps, guidance = key
    if kind == "teacher":
        return f"teacher {name} x {steps}"
    return f"{name} x {steps}" + (f" (w={guidance:g})" if guidance else "")


def summarise(data: dict) -> list[dict[str, Any]]:
    """One row per setting over the seeds: gate outcomes, mean rollouts per scene, means with their
    Student-t intervals, and (students) the teacher NFE and speed-up at equal TV (``equal_tv_rows``)."""
    settings = _settings(data)
    curve = {run["seed"]: [{"nfe": c["nfe_per_frame"], "tv": c["mean_tv"], "cost": c["cpu_seconds_per_rollout"]}
                           for c in run["teacher"]] for run in data["runs"].values()}
    students = [(key, by_seed) for key, by_seed in settings.items() if key[0] == "student"]
    equal = equal_tv_rows(curve, [{"label": _label(k), "nfe": next(iter(v.values()))["nfe_per_frame"],
                                   "per_seed": {s: {"tv": r["mean_tv"], "cost": r["cpu_seconds_per_rollout"]}
                                                for s, r in v.items()}} for k, v in students], CONFIDENCE)
    equal_by_label = {e["label"]: e for e in equal}
    rows = []
    for key, by_seed in settings.items():
        ms = list(by_seed.values())
        row: dict[str, Any] = {
            "key": list(key), "label": _label(key), "kind": key[0], "name": key[1], "steps": key[2],
            "guidance": key[3], "seeds": list(by_seed), "nfe_per_frame": ms[0]["nfe_per_frame"],
            "gate_truth": [gate_text(m["gate_truth"]) for m in ms], "gate_teacher": [gate_text(m["gate_teacher"]) for m in ms],
            "rollouts": [m["n_per_scene"] for m in ms], "mean_rollouts": sum(m["n_per_scene"] for m in ms) / len(ms),
            "ms_per_rollout": sum(m["seconds_per_rollout"] for m in ms) / len(ms) * 1e3,
            "recall": _mean([_metric(m, "recall") for m in ms]), "vendi": _mean([_metric(m, "vendi") for m in ms]),
            "tail_truth": ms[0]["tail_truth"],
        }
        for field in ("mean_tv", "max_tv", "tail_rate", "implausible_rate"):
            row[field] = t_interval([m[field] for m in ms], CONFIDENCE)
        row["equal_tv"] = equal_by_label.get(row["label"])
        row["train"] = (ms[0].get("cumulative_train_seconds") or ms[0]["train_seconds"]) if key[0] == "student" else None
        rows.append(row)
    return rows


def comparisons(data: dict) -> list[dict[str, Any]]:
    """COMPARISONS as paired differences A - B over the seeds both were measured in (mean TV, tail rate,
    implausible share), each with a Student-t interval; ``differs`` says where the interval excludes 0."""
    settings = _settings(data)
    out = []
    for a, b in COMPARISONS:
        ka, kb = ("student", *a, None), ("student", *b, None)
        if ka not in settings or kb not in settings:
            continue
        seeds = [s for s in settings[ka] if s in settings[kb]]
        row: dict[str, Any] = {"a": _label(ka), "b": _label(kb), "seeds": seeds}
        for field in ("mean_tv", "tail_rate", "implausible_rate"):
            mean, lo, hi = t_interval([settings[ka][s][field] - settings[kb][s][field] for s in seeds], CONFIDENCE)
            row[field] = (mean, lo, hi)
            row[f"{field}_differs"] = lo is not None and (lo > 0 or hi < 0)
        out.append(row)
    return out


def _metric(m: dict, name: str) -> float:
    sm = list(m["sample_metrics"].values())
    return sum(v[name] for v in sm) / len(sm) if sm else float("nan")


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def gate_text(gate: dict | None) -> str:
    """PASS / FAIL / UNDECIDED (results stored before the three-outcome gate: pass / FAIL)."""
    if gate is None:
        return "-"
    return gate.get("outcome") or ("pass" if gate["passed"] else "FAIL")


def _iv(v: tuple, digits: int = 4, floor: float | None = 0.0) -> str:
    """mean [lo, hi]; ``floor`` clips the interval of a nonnegative quantity (a rate, a TV)."""
    mean, lo, hi = v
    if lo is not None and floor is not None:
        lo = max(lo, floor)
    return f"{mean:.{digits}f}" + ("" if lo is None else f" [{lo:.{digits}f}, {hi:.{digits}f}]")


def _equal_text(e: dict | None) -> tuple[str, str]:
    """(teacher NFE at equal TV, CPU speed-up) as table cells: point [interval]; '>' / '<' for bounds."""
    if e is None:
        return "-", "-"
    if not e["estimable"]:
        return "n/a (beyond both ends)", "n/a"
    sign = {"above": ">", "below": "<"}.get(e["bound"], "")

    def cell(key: str, digits: int, unit: str) -> str:
        lo, hi = e[f"{key}_lo"], e[f"{key}_hi"]
        iv = (f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None and hi is not None else
              f" [>= {lo:.{digits}f}]" if lo is not None else f" [<= {hi:.{digits}f}]" if hi is not None else "")
        return f"{sign}{e[key]:.{digits}f}{unit}{iv}"

    return cell("teacher_nfe", 1, ""), cell("speedup", 1, "x")


def _t_quantile(k: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, k - 1)) if k > 1 else float("nan")


def _outcomes(xs: list[str]) -> str:
    return " / ".join(xs)


def render_table(data: dict) -> str:
    key = data["protocol"]
    seeds = [run["seed"] for run in data["runs"].values()]
    weights = sorted({run.get("weights", "shipped") for run in data["runs"].values()})
    how = (f"sampled sequentially until both gates decide each scene, at most {key['cap']} rollouts per scene "
           "(looks at 250, then x1.5)" if key["mode"] == "sequential" else f"a fixed {key['n']} rollouts per scene")
    lines = [
        f"Driving world, every scene under action `{key['action']}`, H = {key['horizon']}, evaluation seeds "
        f"{', '.join(map(str, seeds))} (students: {', '.join(weights)} weights), every setting {how}; the teacher "
        f"settings at {key['cap'] or key['n']} per scene. Gates: the three-outcome coverage gate (docs/gate.md, "
        "family alpha 0.05) against the ground truth and, two-sample, against the teacher's own counts (DPM-Solver++(2M) x 32, "
        f"same seed), one outcome per seed. Means over seeds with a 95% Student-t interval ({len(seeds)} seeds, "
        f"clipped at 0 for rates; t = {_t_quantile(len(seeds)):.2f}); "
        "tail = `darts` rate averaged over scenes (truth in brackets); recall = k-NN recall on two scenes at 250 "
        "rollouts. Equal TV: the teacher NFE per frame at which its DPM-Solver++(2M) TV-vs-NFE curve (4-32 steps, "
        "the rows above) "
        "reaches the student's mean TV, interpolated in log-log per seed, and the CPU-time speed-up there "
        "(`metrics.equal_tv`; `>`: the student's TV is below the whole curve, a lower bound; `<`: above it, an "
        "upper bound).", "",
        "| sampler | NFE/frame | gate vs truth | gate vs teacher | rollouts per scene (mean) | mean TV [95% CI] "
        "| tail rate [95% CI] (truth) | implausible | recall | ms/rollout | teacher NFE at equal TV [95% CI] "
        "| speed-up at equal TV (CPU) [95% CI] | train |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summarise(data):
        lines.append(_table_row(r))
    comp = comparisons(data)
    if comp:
        lines += ["", "Paired differences A - B over the seeds (95% Student-t interval; **bold**: the interval "
                  "excludes 0):", "", "| A | B | mean TV | tail rate | implausible |", "|---|---|---|---|---|"]
        for c in comp:
            cells = [f"**{_iv(c[f], floor=None)}**" if c[f"{f}_differs"] else _iv(c[f], floor=None)
                     for f in ("mean_tv", "tail_rate", "implausible_rate")]
            lines.append(f"| {c['a']} | {c['b']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _table_row(r: dict) -> str:
    nfe_cell, speed_cell = _equal_text(r["equal_tv"])
    train = f"{r['train']:.0f} s" if r["train"] is not None else "-"
    return (f"| {r['label']} | {r['nfe_per_frame']:.0f} | {_outcomes(r['gate_truth'])} | "
            f"{_outcomes(r['gate_teacher'])} | {r['mean_rollouts']:.0f} | {_iv(r['mean_tv'])} | "
            f"{_iv(r['tail_rate'])} ({r['tail_truth']:.4f}) | {_iv(r['implausible_rate'])} | {r['recall']:.3f} | "
            f"{r['ms_per_rollout']:.3f} | {nfe_cell} | {speed_cell} | {train} |")


def write_table(readme: pathlib.Path, table: str) -> None:
    text = readme.read_text()
    block = f"{START}\n{table}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Distilled students\n\n" + block + "\n"
    readme.write_text(text)


def render_card(name: str, data: dict) -> str:
    """A student's model card (markdown) from the bench data: how to reproduce it, its training, its
    measured table rows and, per setting, the gates per seed and the per-scene table."""
    runs = list(data["runs"].values())
    summary = [r for r in summarise(data) if r["kind"] == "student" and r["name"] == name]
    table = render_table(data).split("\n")
    lines = [*_card_head(name, data), table[0], "", *table[2:4], *(_table_row(r) for r in summary), ""]
    gate = runs[0]["students"][name][0]["protocol"]["gate"]
    lines += [f"Gates: the three-outcome gate of `fastdiff_core.metrics.gate`, family alpha {gate['alpha']}, the "
              "teacher gate two-sample; stated tolerances "
              f"{json.dumps({k: v for k, v in gate.items() if 'tolerance' in k})} (docs/gate.md). A PASS needs about "
              "12,000-16,000 rollouts per scene with these tolerances, so a capped run ends UNDECIDED where the "
              "setting is not shown outside its bands.", ""]
    for r in summary:
        by_seed = {run["seed"]: next(m for m in run["students"][name] if m["steps"] == r["steps"]
                                     and m.get("guidance") == r["guidance"]) for run in runs}
        lines += _card_setting(r, by_seed)
    return "\n".join(lines) + "\n"


def _card_head(name: str, data: dict) -> list[str]:
    """The card's title, reproduce commands and training facts, up to the measured section's heading."""
    info = catalog.STUDENTS[name]
    runs = list(data["runs"].values())
    first = runs[0]["students"][name][0]
    key = data["protocol"]
    seeds = ",".join(str(run["seed"]) for run in runs)
    size = f"--cap {key['cap']}" if key["mode"] == "sequential" else f"--n {key['n']}"
    return [
        f"# Student `{name}`: {info.title}", "",
        f"{info.doc}. Paper: {info.paper}. Distilled from `driving_teacher_{TEACHER}` (guidance passes per step: "
        f"{info.guidance_passes}).", "",
        "## Reproduce", "", "```bash", first["command"],
        f"fastdiff bench students --only {name} --seeds {seeds} {size}   # the figures below (add --write to "
        "rewrite this card)", "```", "",
        "## Training", "",
        f"- config: `{json.dumps(first['config'], sort_keys=True)}`",
        f"- training time: {first['train_seconds'] / 60:.1f} min of optimisation"
        + (" per round (the k-step student costs every round before it: see the train column)"
           if first.get("cumulative_train_seconds") else "")
        + (f", {first['total_train_seconds'] / 60:.1f} min end to end (data, couplings, all rounds)"
           if first.get("total_train_seconds") else "")
        + " on the shared 2-core CPU (other engineers' jobs running; the issue allows 15 min)",
        "- one training seed (the shipped weights); the intervals below are over evaluation seeds only, so they "
        "carry the sampling noise, not the training noise (docs/bench-students.md measures both for some students)",
        "", f"## Measured (fresh samples, `fastdiff bench students`, {data['measured_at']})", "",
    ]


def _card_setting(r: dict, by_seed: dict[int, dict]) -> list[str]:
    """One measured setting of a student's card: equal-TV figures, the gates per seed, the per-scene table."""
    nfe_cell, speed_cell = _equal_text(r["equal_tv"])
    lines = [f"### {r['steps']} step(s)" + (f", w = {r['guidance']:g}" if r["guidance"] else ""), "",
             f"NFE per frame {r['nfe_per_frame']:.0f}. At equal branch TV the teacher (DPM-Solver++(2M)) needs "
             f"{nfe_cell} NFE per frame; CPU-time speed-up {speed_cell} (interpolated on the teacher's TV-vs-NFE "
             "curve per seed, `metrics.equal_tv`).", ""]
    for seed, m in by_seed.items():
        lines.append(f"- seed {seed}: gate vs truth **{gate_text(m['gate_truth'])}**, vs the teacher's counts "
                     f"**{gate_text(m['gate_teacher'])}** at {m['n_per_scene']:.0f} rollouts per scene (mean over scenes)"
                     + _first_failure(m["gate_truth"]))
    scenes = list(next(iter(by_seed.values()))["scenes"])
    lines += ["", "Per scene, seeds " + " / ".join(map(str, by_seed)) + ":", "",
              "| scene | truth (waits, crosses, darts) | darts (tail) | implausible | TV vs truth | TV vs teacher | n |",
              "|---|---|---|---|---|---|---|"]
    for s in scenes:
        cs = [by_seed[k]["scenes"][s] for k in by_seed]
        tr = cs[0]["truth"]
        lines.append(f"| {s} | {tr['waits']:.3f}, {tr['crosses']:.3f}, {tr['darts']:.4f} | "
                     + " / ".join(f"{c['tail_rate']:.4f}" for c in cs) + " | "
                     + " / ".join(f"{c['implausible_rate']:.4f}" for c in cs) + " | "
                     + " / ".join(f"{c['tv']:.3f}" for c in cs) + " | "
                     + " / ".join(f"{c['tv_teacher']:.3f}" for c in cs) + " | "
                     + " / ".join(str(c["n"]) for c in cs) + " |")
    ct = next(iter(by_seed.values())).get("cfg_teacher")
    if ct:
        lines += ["", f"CFG teacher at the same w and solver (seed {next(iter(by_seed))}): "
                  f"{ct['nfe_per_frame']:.0f} NFE/frame, mean TV vs truth {ct['mean_tv']:.4f}, tail "
                  f"{ct['tail_rate']:.4f}; the 'teacher' gate above is against these CFG counts."]
    return [*lines, ""]


def _first_failure(gate: dict) -> str:
    fails = gate["failures"][:1]
    if not fails:
        return ""
    f = fails[0]
    return (f"; first failing check: {f['check']} {f['scene']} {f['label']} {f['rate']:.4f} "
            f"[{f['lo']:.4f}, {f['hi']:.4f}] vs band [{f['band_lo']:.4f}, {f['band_hi']:.4f}]")


def combine(files: list[pathlib.Path]) -> dict[str, Any]:
    """The runs of several bench JSON files (same protocol) as one data set; later files win per seed."""
    data: dict[str, Any] | None = None
    for f in files:
        if not f.is_file():
            raise ValueError(f"--combine {f}: no such file")
        d = json.loads(f.read_text())
        if "runs" not in d or "protocol" not in d:
            raise ValueError(f"--combine {f}: not a `fastdiff bench students` JSON (no runs/protocol)")
        if data is None:
            data = {**d, "runs": dict(d["runs"])}
        elif d["protocol"] != data["protocol"]:
            raise ValueError(f"--combine {f}: protocol {d['protocol']} differs from {data['protocol']}")
        else:
            data["runs"].update(d["runs"])
            data["measured_at"] = max(data.get("measured_at", ""), d.get("measured_at", ""))
    data["runs"] = {k: data["runs"][k] for k in sorted(data["runs"], key=int)}
    return data


def load_results() -> dict[str, Any]:
    """The shipped bench JSON (what the cards and the docs table are rendered from)."""
    return json.loads(BENCH_JSON.read_text())


def check_weights_dir(weights_dir: pathlib.Path, names: list[str] | None = None) -> None:
    """Refuse a weights folder that holds none of the named students' weights, before any sampling."""
    for name in names or catalog.STUDENTS:
        steps = catalog.STUDENTS[name].steps
        if not any(checkpoint_file(name, k, weights_dir).exists() for k in (*steps, None)):
            raise ValueError(f"--weights-dir={weights_dir}: no weights of student {name!r} there "
                             f"(`fastdiff train student {name} --out {weights_dir}`); or pick --only")


def check_combined(data: dict[str, Any]) -> None:
    """``--combine --write``: runs measured by separate processes (one seed each) become the shipped
    results only if every run measured the shipped students."""
    others = sorted({run.get("weights", "shipped") for run in data["runs"].values()} - {"shipped"})
    if others:
        raise ValueError(f"--combine --write: runs of students trained elsewhere ({others}); only "
                         "the shipped students' results are tracked files")
