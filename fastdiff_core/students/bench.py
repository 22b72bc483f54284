"""``fastdiff bench students``: every shipped student on the driving world, beside the teacher.

For each student and each of its step counts: NFE per frame (counted), wall-clock per rollout, mean
and max branch TV over all scenes, the pooled tail rate, the implausible share, precision/recall and
Vendi diversity, and the coverage gate against the ground truth and against the teacher's own rates.
The teacher is measured on the same protocol with the DPM-Solver++(2M) and Heun settings below, so
each student is also compared with the cheapest teacher setting that reaches its TV ("wall-clock at
equal branch TV"). Writes ``weights/students_bench.json``, one model card ``weights/<name>.md`` per
student, and the table between the ``students-table`` markers of docs/bench-students.md.

    fastdiff bench students                  # everything (about 10-20 min on the shared 2-core CPU)
    fastdiff bench students --only dmd rcm   # re-measure some students, keep the other rows
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

import torch

from fastdiff_core import catalog
from fastdiff_core.commands.args import int_range, writable_file
from fastdiff_core.denoiser import Guidance
from fastdiff_core.students.card import StudentProtocol, counts_of, measure
from fastdiff_core.students.driving import WEIGHTS_DIR, load_shipped, student_frame_sampler
from fastdiff_core.students.training import TEACHER

ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCH_JSON = WEIGHTS_DIR / "students_bench.json"
TABLE_PAGE = ROOT / "docs" / "bench-students.md"  # the table between the students-table markers
# Teacher settings on the same protocol: (solver, steps). Heun 16 is the teacher card's accurate
# setting and the last entry is the reference ("the teacher's own rates") of every student's second gate.
TEACHER_CURVE = (("dpmpp_2m", 4), ("dpmpp_2m", 8), ("dpmpp_2m", 16), ("heun", 16))
GUIDED = ("dpmpp_2m", 8, 3.0)  # the guidance student vs the CFG teacher: solver, steps, w
START, END = "<!-- students-table:start -->", "<!-- students-table:end -->"


def _solver(name: str, steps: int):
    from fastdiff_core.worlds.driving import solver_and_grid

    return solver_and_grid(name, steps)


def measure_teacher_curve(protocol: StudentProtocol, log=print) -> list[dict[str, Any]]:
    from fastdiff_core.models.teacher import load_teacher

    net = load_teacher(TEACHER)
    rows = []
    for solver, steps in TEACHER_CURVE:
        fn, sigmas = _solver(solver, steps)
        m = measure(net, protocol, None, solver=fn, sigmas=sigmas)
        rows.append({"solver": solver, "steps": steps, **m})
        log(f"teacher {solver} x {steps}: NFE/frame {m['nfe_per_frame']:.0f}, mean TV {m['mean_tv']:.4f}, "
            f"tail {m['tail_rate']:.4f}, {m['seconds_per_rollout'] * 1e3:.3f} ms/rollout")
    return rows


def measure_student(name: str, protocol: StudentProtocol, ref: dict, log=print) -> list[dict[str, Any]]:
    """Every measured setting of one student (fresh samples)."""
    info = catalog.STUDENTS[name]
    rows = []
    if info.guidance_input:
        from fastdiff_core.models.teacher import load_teacher

        solver, steps, w = GUIDED
        fn, sigmas = _solver(solver, steps)
        cfg = measure(load_teacher(TEACHER), protocol, ref, solver=fn, sigmas=sigmas, guidance=Guidance(w))
        cfg_counts = counts_of(cfg)
        student, facts = load_shipped(name, steps)
        for scale in (1.0, w):
            fs = student_frame_sampler(student, facts, steps, guidance_scale=scale, solver=fn, sigmas=sigmas)
            m = measure(None, protocol, ref if scale == 1.0 else cfg_counts, frame_sampler=fs)
            rows.append(_row(name, steps, facts, m, guidance=scale, solver=solver,
                             cfg_teacher={"nfe_per_frame": cfg["nfe_per_frame"], "mean_tv": cfg["mean_tv"],
                                          "tail_rate": cfg["tail_rate"],
                                          "seconds_per_rollout": cfg["seconds_per_rollout"]}
                             if scale != 1.0 else None))
            log(_line(rows[-1]))
        return rows
    for steps in info.steps:
        student, facts = load_shipped(name, steps)
        m = measure(None, protocol, ref, frame_sampler=student_frame_sampler(student, facts, steps))
        rows.append(_row(name, steps, facts, m))
        log(_line(rows[-1]))
    return rows


def _row(name: str, steps: int, facts: dict, m: dict, **more: Any) -> dict[str, Any]:
    return {"student": name, "steps": steps, "train_seconds": facts["stats"]["train_seconds"],
            "cumulative_train_seconds": facts.get("cumulative_train_seconds"),
            "total_train_seconds": facts.get("total_train_seconds"), "command": facts["command"],
            "config": facts["config"], **more, **m}


def _line(r: dict) -> str:
    return (f"{r['student']} x {r['steps']}" + (f" (w={r['guidance']})" if r.get("guidance") else "")
            + f": NFE/frame {r['nfe_per_frame']:.0f}, mean TV {r['mean_tv']:.4f}, tail {r['tail_rate']:.4f} "
            f"(truth {r['tail_truth']:.4f}), implausible {r['implausible_rate']:.4f}, gate truth "
            f"{_g(r['gate_truth'])}, gate teacher {_g(r['gate_teacher'])} at {r['n_per_scene']} rollouts per scene")


def equal_tv(row: dict, curve: list[dict]) -> dict[str, Any]:
    """The cheapest teacher setting whose mean TV is <= the student's, and the time ratios (CPU time of
    this process per rollout: robust to other jobs on a shared CPU; wall clock alongside)."""
    ok = [c for c in curve if c["mean_tv"] <= row["mean_tv"]]
    best = min(ok, key=lambda c: c["nfe_per_frame"]) if ok else min(curve, key=lambda c: c["mean_tv"])
    return {"teacher_setting": f"{best['solver']} x {best['steps']}", "teacher_nfe": best["nfe_per_frame"],
            "teacher_tv": best["mean_tv"], "reached": bool(ok),
            "speedup": best["cpu_seconds_per_rollout"] / row["cpu_seconds_per_rollout"],
            "wall_speedup": best["seconds_per_rollout"] / row["seconds_per_rollout"],
            "teacher_ms_per_rollout": best["seconds_per_rollout"] * 1e3}


def run_bench(only: list[str] | None = None, n: int = 2000, write_readme: bool = True, teacher: bool | None = None,
              log=print, *, write: bool = False) -> dict[str, Any]:
    """Measure (some) students and merge them into the shipped bench JSON's data. With ``write``: save that
    JSON, rewrite the cards and (``write_readme``) the docs/bench-students.md table, all tracked files;
    without it nothing tracked is written."""
    protocol = StudentProtocol(n=n)
    data = json.loads(BENCH_JSON.read_text()) if BENCH_JSON.exists() else {}
    if teacher or (teacher is None and (not data.get("teacher") or data.get("n") != n)):
        data["teacher"] = measure_teacher_curve(protocol, log)
        data["students"] = {}  # measured against another teacher run: re-measure them all
    data["n"] = n
    ref = counts_of(data["teacher"][-1])
    names = only or list(catalog.STUDENTS)
    students = {k: v for k, v in data.get("students", {}).items() if k not in names}
    for name in names:
        rows = measure_student(name, protocol, ref, log)
        for r in rows:
            r["equal_tv"] = equal_tv(r, data["teacher"])
        students[name] = rows
    data["students"] = {k: students[k] for k in catalog.STUDENTS if k in students}
    data["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if write:
        BENCH_JSON.parent.mkdir(parents=True, exist_ok=True)
        BENCH_JSON.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        for name in names:
            (WEIGHTS_DIR / f"{name}.md").write_text(render_card(name, data))
        if write_readme:
            write_table(TABLE_PAGE, render_table(data))
    log(render_table(data))
    return data


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _g(gate: dict | None) -> str:
    """PASS / FAIL / UNDECIDED (results stored before the three-outcome gate: pass / FAIL)."""
    if gate is None:
        return "-"
    return gate.get("outcome") or ("pass" if gate["passed"] else "FAIL")


def render_table(data: dict) -> str:
    lines = [
        f"Driving world, every scene under action `keep`, H = 6, n = {data['n']} rollouts per scene, fresh noise; "
        "tail = pooled `darts` rate (truth in brackets); gates: the coverage gate (PASS / FAIL / UNDECIDED, "
        "docs/gate.md) against the ground truth and, two-sample, against the teacher's own counts (the teacher with "
        "Heun x 16 in the same run); ms/rollout = wall clock per rollout, batched "
        "(4096), on the shared CPU; speed-up = CPU time per rollout of the cheapest teacher setting with mean TV "
        "<= the student's, divided by the student's (`>`: the student's TV is below every teacher setting "
        "measured, so it is compared with the most accurate one and the true ratio is larger).", "",
        "| sampler | steps | NFE/frame | mean TV | max TV | tail rate | implausible | recall | Vendi | gate vs truth "
        "| gate vs teacher | ms/rollout | speed-up at equal TV | train |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in data.get("teacher", []):
        lines.append(_table_row(f"teacher ({c['solver']})", c, None))
    for name, rows in data.get("students", {}).items():
        for r in rows:
            label = name + (f" (w={r['guidance']:g})" if r.get("guidance") else "")
            lines.append(_table_row(label, r, r))
    return "\n".join(lines)


def _table_row(label: str, m: dict, r: dict | None) -> str:
    sm = list(m["sample_metrics"].values())
    recall = sum(v["recall"] for v in sm) / len(sm) if sm else float("nan")
    vendi = sum(v["vendi"] for v in sm) / len(sm) if sm else float("nan")
    speed, train = "-", "-"
    if r is not None:
        e = r["equal_tv"]
        speed = f"{'' if e['reached'] else '>'}{e['speedup']:.1f}x vs {e['teacher_setting']}"
        train = f"{r.get('cumulative_train_seconds') or r['train_seconds']:.0f} s"
    return (f"| {label} | {m['steps']} | {m['nfe_per_frame']:.0f} | {m['mean_tv']:.4f} | {m['max_tv']:.4f} | "
            f"{m['tail_rate']:.4f} ({m['tail_truth']:.4f}) | {m['implausible_rate']:.4f} | {recall:.3f} | "
            f"{vendi:.2f} | {_g(m['gate_truth'])} | {_g(m['gate_teacher'])} | {m['seconds_per_rollout'] * 1e3:.3f} | "
            f"{speed} | {train} |")


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
    info = catalog.STUDENTS[name]
    rows = data["students"][name]
    first = rows[0]
    lines = [
        f"# Student `{name}`: {info.title}", "",
        f"{info.doc}. Paper: {info.paper}. Distilled from `driving_teacher_{TEACHER}` (guidance passes per step: "
        f"{info.guidance_passes}).", "",
        "## Reproduce", "", "```bash", first["command"], f"fastdiff bench students --only {name} --n {data['n']}", "```", "",
        "## Training", "",
        f"- config: `{json.dumps(first['config'], sort_keys=True)}`",
        f"- training time: {first['train_seconds'] / 60:.1f} min of optimisation"
        + (" per round (the k-step student costs every round before it: see the train column)"
           if first.get("cumulative_train_seconds") else "")
        + (f", {first['total_train_seconds'] / 60:.1f} min end to end (data, couplings, all rounds)"
           if first.get("total_train_seconds") else "")
        + " on the shared 2-core CPU (other engineers' jobs running; the issue allows 15 min)",
        "", "## Measured (fresh samples, `fastdiff bench students`)", "",
        render_table({"n": data["n"], "teacher": [], "students": {name: rows}}).split("\n", 2)[2], "",
    ]
    for r in rows:
        label = f"{r['steps']} step(s)" + (f", w = {r['guidance']:g}" if r.get("guidance") else "")
        e = r["equal_tv"]
        lines += [
            f"### {label}", "",
            f"NFE per frame {r['nfe_per_frame']:.0f}; {r['seconds_per_rollout'] * 1e3:.3f} ms per rollout (wall clock, "
            f"batched) vs {e['teacher_ms_per_rollout']:.3f} ms for the cheapest teacher setting at equal or better "
            f"branch TV, {e['teacher_setting']} ({e['teacher_nfe']:.0f} NFE/frame, mean TV {e['teacher_tv']:.4f}): "
            f"{e['speedup']:.1f}x in CPU time, {e['wall_speedup']:.1f}x in wall clock"
            + ("" if e["reached"] else " (the student's TV is below every teacher setting measured: a lower bound)")
            + ".", "",
            f"Gate vs ground truth: **{_g(r['gate_truth'])}**; vs the teacher's own rates: **{_g(r['gate_teacher'])}**"
            f" at {r['n_per_scene']} rollouts per scene (the three-outcome gate of `fastdiff_core.metrics.gate`, "
            f"family alpha {r['protocol']['gate']['alpha']}, the teacher gate two-sample; stated tolerances "
            f"{json.dumps({k: v for k, v in r['protocol']['gate'].items() if 'tolerance' in k})}; "
            f"docs/gate.md).",
            "",
            "| scene | waits | crosses | darts (tail) [95% CI] / truth | implausible | TV vs truth | TV vs teacher |",
            "|---|---|---|---|---|---|---|",
        ]
        for s, c in r["scenes"].items():
            cnt, tr, nn = c["counts"], c["truth"], c["n"]
            lines.append(f"| {s} | {cnt['waits'] / nn:.3f} / {tr['waits']:.3f} | {cnt['crosses'] / nn:.3f} / "
                         f"{tr['crosses']:.3f} | {c['tail_rate']:.4f} [{c['tail_lo']:.4f}, {c['tail_hi']:.4f}] / "
                         f"{tr['darts']:.4f} | {c['implausible_rate']:.4f} | {c['tv']:.4f} | {c['tv_teacher']:.4f} |")
        if r.get("cfg_teacher"):
            ct = r["cfg_teacher"]
            lines += ["", f"CFG teacher at the same w and solver: {ct['nfe_per_frame']:.0f} NFE/frame, mean TV vs "
                      f"truth {ct['mean_tv']:.4f}, tail {ct['tail_rate']:.4f}, {ct['seconds_per_rollout'] * 1e3:.3f} "
                      "ms/rollout; the 'teacher' gate above is against these CFG rates."]
        for m_name, v in r["sample_metrics"].items():
            lines.append(f"\n{m_name}: precision {v['precision']:.3f}, recall {v['recall']:.3f}, density "
                         f"{v['density']:.3f}, coverage {v['coverage']:.3f}, Vendi {v['vendi']:.2f} "
                         f"(simulator {v['vendi_truth']:.2f})")
        fails = r["gate_truth"]["failures"][:6]
        if fails:
            lines.append("\nGate failures vs truth (first 6): " + "; ".join(
                f"{f['check']} {f['scene']} {f['label']} {f['rate']:.4f} vs [{f['band_lo']:.4f}, {f['band_hi']:.4f}]"
                for f in fails))
        lines.append("")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(catalog.STUDENTS))
    parser.add_argument("--teacher", action="store_true", help="re-measure the teacher curve even if cached")
    parser.add_argument("--n", type=int_range(10, 1_000_000), default=2000, help="rollouts per scene")
    parser.add_argument("--write", action="store_true",
                        help="save the shipped bench JSON and model cards and the docs/bench-students.md table "
                             "(tracked files); without it the bench only prints (and writes --json)")
    parser.add_argument("--no-readme", action="store_true", help="with --write: leave docs/bench-students.md as is")
    parser.add_argument("--json", type=writable_file, default=None, help="also write the results here")
    parser.add_argument("--threads", type=int_range(1, 1024), default=1, help="torch threads (2 spin-wait on a loaded 2-core CPU)")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the cards and the docs/bench-students.md table from the bench JSON without sampling")


def render_only(write_readme: bool = True, write: bool = False) -> None:
    """Rewrite the cards and the table from the bench JSON (with ``write``); else print the table."""
    data = json.loads(BENCH_JSON.read_text())
    if not write:
        print(render_table(data))
        return
    for name in data["students"]:
        (WEIGHTS_DIR / f"{name}.md").write_text(render_card(name, data))
    if write_readme:
        write_table(TABLE_PAGE, render_table(data))


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.render_only:
        render_only(not args.no_readme, write=args.write)
        return 0
    data = run_bench(args.only, args.n, not args.no_readme, True if args.teacher else None,
                     log=lambda m: print(m, flush=True), write=args.write)
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return 0
