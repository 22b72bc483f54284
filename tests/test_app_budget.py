"""Budget calculator and Explore's live bill, through Streamlit's AppTest (no workers, no store)."""

import pathlib

from streamlit.testing.v1 import AppTest

from tests.apptest_support import table_with

APP = pathlib.Path(__file__).resolve().parents[1] / "app"


def metrics(at):
    return {m.label: m.value for m in at.metric}


def test_budget_calculator_seed_cycle_and_verdicts():
    at = AppTest.from_file(str(APP / "views" / "budget_calculator.py"), default_timeout=30).run()
    assert not at.exception
    m = metrics(at)
    assert m["per cycle"] == "1,920" and m["per rollout"] == "48"
    errors = " ".join(e.value for e in at.error)
    assert "In-the-loop planning at 10 Hz: FAIL" in errors and "19.2 s" in errors and "192.0x over" in errors
    # The seed's vanilla plan, typed in: 1000 x 2 x 20 x 40.
    at.number_input(key="bc.S").set_value(1000)
    at.number_input(key="bc.C").set_value(2.0)
    at.number_input(key="bc.H").set_value(20)
    at.run()
    assert metrics(at)["per cycle"] == "1.60 M"
    assert any("1,000 x 2 x 20 x 40 = 1,600,000" in m.value for m in at.markdown)
    # One step, short horizon, 8 futures on 8 lanes fits the 100 ms budget.
    for key, v in [("bc.S", 1), ("bc.C", 1.0), ("bc.H", 8), ("bc.P", 4), ("bc.R", 2), ("bc.lanes", 8)]:
        at.number_input(key=key).set_value(v)
    at.run()
    ok = " ".join(s.value for s in at.success)
    assert "In-the-loop planning at 10 Hz: PASS" in ok and "80 ms" in ok
    assert at.query_params["S"] == ["1"] or at.query_params["S"] == "1"


def test_budget_calculator_refuses_link_values_and_solves_what_fits():
    at = AppTest.from_file(str(APP / "views" / "budget_calculator.py"), default_timeout=30)
    at.query_params["S"] = "1e12"
    at.query_params["H"] = "1000000"
    at.run()
    assert not at.exception
    shown = " ".join(e.value for e in at.error).replace("\\", "")
    assert "S (NFE per frame) (S)='1e12' in the link is not allowed; expected an integer in [1, 100000]" in shown
    assert "H (frames) (H)='1000000' in the link is not allowed; expected an integer in [1, 10000]" in shown
    assert at.number_input(key="bc.S").value == 4 and not at.metric  # not coerced, nothing projected
    at.button(key="bc.refused.ok").click().run()
    assert metrics(at)["per cycle"] == "1,920"
    fits = {(r["regime"], r["factor"]): r for r in table_with(at, "largest that fits").to_dict("records")}
    # planning at 10 ms/NFE, 1 lane: 4 x 12 x 40 = 1,920 serial NFE = 19.2 s; only ms/NFE can fit 100 ms
    plan = "In-the-loop planning at 10 Hz"
    assert fits[(plan, "P·R (fan-out)")]["largest that fits"].startswith("nothing fits")
    assert fits[(plan, "per-NFE latency (ms)")]["largest that fits"] == "0.0521"  # 100 ms / 1,920
    # closed loop at $2/h, 1 lane: $/1,000 = 1,000 x 1,920 NFE x ms / 3,600 s x $2 <= $0.15 -> ms <= 0.141
    assert fits[("Closed-loop simulation at scale", "per-NFE latency (ms)")]["largest that fits"] == "0.141"
    assert fits[("Closed-loop simulation at scale", "H (frames)")]["fits now"] == "no"
    at.number_input(key="bc.lanes").set_value(40).run()
    fits = {(r["regime"], r["factor"]): r for r in table_with(at, "largest that fits").to_dict("records")}
    # 40 lanes: one wave per evaluation, cycle = S x H x 10 ms; at S = 4: H <= 2.5; at H = 12: S < 1
    assert fits[(plan, "S (NFE per frame)")]["largest that fits"].startswith("nothing fits")
    assert fits[(plan, "H (frames)")]["largest that fits"] == "2"


def test_explore_bill_updates_live_and_regime_sets_defaults():
    at = AppTest.from_file(str(APP / "views" / "explore.py"), default_timeout=30).run()
    assert not at.exception
    assert metrics(at)["per frame"] == "20"  # offline default: dpmpp_2m, 20 steps, no CFG
    at.number_input(key="ex.guidance_scale").set_value(3.0)
    at.run()
    assert metrics(at)["per frame"] == "40"  # CFG doubles it
    at.selectbox(key="ex.regime").set_value("planning")
    at.run()
    # The preset on the mixture world: 4 steps, no CFG (scale reset to 1); H, P, R stay 1 (no rollouts),
    # and the fields say why they are disabled; the notice says what changed, Undo restores it.
    assert metrics(at)["per cycle"] == "4"
    assert at.number_input(key="ex.horizon").disabled and "no rollouts" in at.number_input(key="ex.horizon").help
    notice = " ".join(i.value for i in at.info)
    assert "Regime set to In-the-loop planning at 10 Hz: Steps 20 → 4, Guidance scale 3 → 1" in notice, notice
    at.button(key="ex.undo").click().run()
    assert at.selectbox(key="ex.regime").value == "offline" and metrics(at)["per frame"] == "40"
    at.selectbox(key="ex.regime").set_value("planning").run()
    at.selectbox(key="ex.world").set_value("driving").run()
    m = metrics(at)
    # The preset on the driving world: 4 steps, no CFG, H 12, 10 plans x 4 futures.
    assert m["per cycle"] == f"{4 * 1 * 12 * 40:,}"
    assert not at.number_input(key="ex.horizon").disabled
    text = " ".join(e.value for e in at.error)
    assert "In-the-loop planning at 10 Hz" in text and "latency FAIL" in text
    at.selectbox(key="ex.solver").set_value("heun")
    at.run()
    assert metrics(at)["per frame"] == "7"  # Heun: 2n - 1 evaluations


def test_explore_rejects_bad_interval_with_field_named():
    at = AppTest.from_file(str(APP / "views" / "explore.py"), default_timeout=30).run()
    at.number_input(key="ex.guidance_scale").set_value(2.0)
    at.checkbox(key="ex.interval_on").check()
    at.run()
    at.number_input(key="ex.interval_lo").set_value(6.0)
    at.run()
    assert any("guidance_interval" in e.value and "sigma_lo < sigma_hi" in e.value for e in at.error)


def test_form_survives_a_page_switch():
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=30).run()
    assert not at.exception
    at.number_input(key="ex.steps").set_value(7).run()
    at.switch_page("views/budget_calculator.py").run()
    assert not at.exception and metrics(at)["per cycle"] == "1,920"
    at.switch_page("views/explore.py").run()
    assert at.number_input(key="ex.steps").value == 7
    assert metrics(at)["per frame"] == "7"


def test_share_link_hides_navigation():
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=30)
    at.query_params["exp"] = "e000000000000"
    at.run()
    assert any("Experiment not found" in t.value for t in at.title)


def test_explore_refuses_a_fan_out_the_world_cannot_run():
    at = AppTest.from_file(str(APP / "views" / "explore.py"), default_timeout=30).run()
    assert not at.button(key="ex.run").disabled
    at = AppTest.from_file(str(APP / "views" / "explore.py"), default_timeout=30)
    at.query_params["horizon"] = "12"  # in the field's range, but the mixture world has no rollouts
    at.run()
    # the world plugin's refusal (RunSpec.refusal): the same message the CLI and the client give; the
    # field stays editable so that it can be fixed
    assert at.button(key="ex.run").disabled and not at.number_input(key="ex.horizon").disabled
    assert any("horizon=12 is not supported by world='mixture'" in e.value for e in at.error), \
        [e.value for e in at.error]


def test_links_with_values_out_of_range_are_refused_not_coerced():
    """Each value a form field does not allow is named with what is allowed; the field keeps its
    default, Run stays disabled until the user confirms, and nothing is coerced (issue 18 item 7)."""
    at = AppTest.from_file(str(APP / "views" / "explore.py"), default_timeout=30)
    for name, raw in {"steps": "99999999999", "guidance_scale": "1e308", "samples": "inf", "world": "moon",
                      "interval_on": "maybe", "seed": "1.5", "opt.nope": "1"}.items():
        at.query_params[name] = raw
    at.run()
    assert not at.exception
    shown = " ".join(e.value for e in at.error).replace("\\", "")  # the page escapes markdown
    for needle in ("Steps (steps)='99999999999' in the link is not allowed; expected an integer in [1, 1000]",
                   "Guidance scale (guidance_scale)='1e308' in the link is not allowed; expected a number in [0.0, 50.0]",
                   "Seed (seed)='1.5' in the link is not allowed; expected an integer in [0,",
                   "Rollouts (samples) (samples)='inf'", "World (world)='moon'", "expected 1 or 0",
                   "solver 'dpmpp_2m' has no option 'nope'"):
        assert needle in shown, (needle, shown)
    assert at.number_input(key="ex.steps").value == 20 and at.number_input(key="ex.guidance_scale").value == 1.0
    assert not [b for b in at.button if b.key == "ex.run"]  # no Run while refused values stand
    at.button(key="ex.refused.ok").click().run()
    assert not at.error and not at.button(key="ex.run").disabled


def test_explore_solver_options_reach_the_bill_the_spec_and_the_link():
    """Each solver's catalog options are widgets (choices, ranges); a changed one enters the RunSpec, the
    bill and the URL, a refresh restores it, and a hand-edited out-of-range value keeps the default.
    Through main.py, which keeps the form's state across runs that do not draw every widget."""
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=30).run()
    at.selectbox(key="ex.solver").set_value("adaptive").run()
    assert not at.exception
    assert metrics(at)["per frame"] == "2,000"  # an adaptive solver is billed at its cap, max_nfe
    at.number_input(key="ex.opt.adaptive.max_nfe").set_value(300).run()
    assert metrics(at)["per frame"] == "300"
    assert at.query_params["opt.max_nfe"] in ("300", ["300"])
    at.selectbox(key="ex.solver").set_value("unipc").run()
    assert at.selectbox(key="ex.opt.unipc.order").options == ["1", "2", "3"]
    assert "opt.max_nfe" not in at.query_params  # only the chosen solver's options are in the link
    at.selectbox(key="ex.solver").set_value("adaptive").run()
    assert at.number_input(key="ex.opt.adaptive.max_nfe").value == 300  # kept per solver

    fresh = AppTest.from_file(str(APP / "views" / "explore.py"), default_timeout=30)
    fresh.query_params["solver"] = "ddim"
    fresh.query_params["opt.eta"] = "0.25"
    fresh.run()
    assert not fresh.exception and fresh.number_input(key="ex.opt.ddim.eta").value == 0.25
    bad = AppTest.from_file(str(APP / "views" / "explore.py"), default_timeout=30)
    bad.query_params["solver"] = "ddim"
    bad.query_params["opt.eta"] = "7"  # outside [0, 1]
    bad.run()
    assert not bad.exception and bad.number_input(key="ex.opt.ddim.eta").value == 0.0  # refused, not clipped
    assert any("opt.eta='7' in the link is not allowed; expected a number in [0.0, 1.0]" in e.value.replace("\\", "")
               for e in bad.error), [e.value for e in bad.error]
