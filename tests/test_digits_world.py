"""The digits world: real data (scikit-learn's bundled digits), a shipped diffusers checkpoint trained by
`fastdiff train digits`, its classifier, and runs judged against the data truth and the teacher."""

import json
import subprocess
import sys
import pathlib

import pytest
import torch

from fastdiff_core import catalog
from fastdiff_core.run import execute
from fastdiff_core.spec import RunSpec
from fastdiff_core.worlds.digits import plugin
from fastdiff_core.worlds.digits.data import load_split
from fastdiff_core.worlds.digits.evaluation import load_model, sample_digits
from fastdiff_core.worlds.digits.model import CONDITIONS, LABELS, META_FILE, WEIGHTS_DIR, condition_truth
from fastdiff_core.worlds.digits.train import TrainConfig, classifier_accuracy, train_unet, training_labels

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLASSIFIER_MIN_ACCURACY = 0.95  # the stated bound on held-out digits


@pytest.fixture(scope="module")
def model():
    return load_model(WEIGHTS_DIR)


def test_split_is_stratified_thinned_and_deterministic():
    a, b = load_split(seed=0), load_split(seed=0)
    assert (a.diffusion_labels == b.diffusion_labels).all() and (a.test_images == b.test_images).all()
    assert len(a.train_labels) + len(a.test_labels) == 1797
    freq = a.class_frequencies()
    assert 0.015 < freq["4"] < 0.025, freq  # the rare digit at ~2%
    assert all(0.09 < f < 0.13 for d, f in freq.items() if d != "4")
    # no held-out image in either training set (pixel-identical duplicates aside)
    train = {im.tobytes() for im in a.train_images}
    assert sum(im.tobytes() in train for im in a.test_images) <= 2
    assert load_split(seed=1, rare_digit=7).class_frequencies()["7"] < 0.025
    with pytest.raises(ValueError, match="rare_digit=12"):
        load_split(rare_digit=12)


def test_shipped_model_is_a_genuine_diffusers_checkpoint(model):
    """diffusers' own from_pretrained loads the folder (UNet, scheduler, the whole DDPMPipeline); it is
    under 5 MB, and its sidecar agrees with the world's declaration."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(str(WEIGHTS_DIR / "unet"))
    scheduler = DDPMScheduler.from_pretrained(str(WEIGHTS_DIR / "scheduler"))
    pipe = DDPMPipeline.from_pretrained(str(WEIGHTS_DIR))
    assert isinstance(pipe.unet, UNet2DModel) and unet.config.num_class_embeds == len(CONDITIONS)
    assert scheduler.config.prediction_type == "epsilon" and scheduler.config.num_train_timesteps == 1000
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        out = unet(x, torch.tensor([10, 500, 999]), class_labels=torch.tensor([4, 10, 12])).sample
        ours = model.unet(x, torch.tensor([10, 500, 999]), class_labels=torch.tensor([4, 10, 12])).sample
    assert out.shape == x.shape and torch.equal(out, ours)
    size = sum(f.stat().st_size for f in WEIGHTS_DIR.rglob("*") if f.is_file())
    assert size <= 5_000_000, size
    meta = json.loads((WEIGHTS_DIR / META_FILE).read_text())
    assert meta["data"]["rare_digit"] == plugin.RARE_DIGIT == catalog.WORLDS["digits"].tail
    assert meta["conditions"] == CONDITIONS and tuple(CONDITIONS) == plugin.CONDITION_NAMES
    assert meta["command"].startswith("fastdiff train digits")
    card = (WEIGHTS_DIR / "README.md").read_text()
    assert meta["command"] in card and "library_name: diffusers" in card


def test_classifier_beats_its_stated_bound_on_held_out_digits(model):
    """Recomputed from the shipped weights on the held-out split of the recorded seed (not read back)."""
    meta = model.meta
    split = load_split(seed=meta["train"]["seed"], rare_digit=meta["train"]["rare_digit"],
                       rare_fraction=meta["train"]["rare_fraction"])
    acc = classifier_accuracy(model.classifier, split)
    assert acc["heldout_accuracy"] > CLASSIFIER_MIN_ACCURACY, acc
    assert acc["heldout_per_digit"][model.rare] > 0.9, acc
    assert acc["heldout_accuracy"] == pytest.approx(meta["stats"]["heldout_accuracy"])
    assert model.frequencies == pytest.approx(split.class_frequencies())


def test_training_is_deterministic_given_the_seed():
    split = load_split()
    config = TrainConfig(steps=2, batch=8)
    (a, _), (b, _) = train_unet(split, config), train_unet(split, config)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    (c, _) = train_unet(split, TrainConfig(steps=2, batch=8, seed=1))
    assert not torch.equal(next(iter(a.state_dict().values())), next(iter(c.state_dict().values())))
    # label dropout: null with p_null, the parity group with p_group, else the digit
    labels = training_labels(torch.full((20_000,), 3), config, torch.Generator().manual_seed(0))
    shares = torch.bincount(labels, minlength=len(CONDITIONS)).to(torch.float64) / 20_000
    assert shares[CONDITIONS["none"]] == pytest.approx(0.2, abs=0.015)
    assert shares[CONDITIONS["odd"]] == pytest.approx(0.3, abs=0.015)
    assert shares[3] == pytest.approx(0.5, abs=0.015) and shares[CONDITIONS["even"]] == 0


def test_condition_truth_restricts_and_renormalises():
    freq = load_split().class_frequencies()
    even = condition_truth(freq, "even")
    assert sum(even.values()) == pytest.approx(1.0) and even["1"] == 0 and even["unreadable"] == 0
    assert even["4"] == pytest.approx(freq["4"] / sum(freq[d] for d in "02468"))
    assert condition_truth(freq, "7")["7"] == 1.0
    with pytest.raises(ValueError, match="condition='eleven'"):
        condition_truth(freq, "eleven")


def test_sampling_counts_every_evaluation_and_guidance_doubles_it(model):
    s = sample_digits(model, condition="even", n=40, solver="heun", steps=3, guidance=3.0, seed=1)
    declared = catalog.solver_info("heun").nfe(3, {})
    assert s.nfe_counted == s.nfe_formula == 2 * declared * 40
    assert s.images.shape == (40, 1, 8, 8) and s.labels.max() < len(LABELS)
    again = sample_digits(model, condition="even", n=40, solver="heun", steps=3, guidance=3.0, seed=1)
    assert torch.equal(s.images, again.images)


def test_a_run_reports_both_references_and_both_gates(model):
    spec = RunSpec(world="digits", world_options={"condition": "even"}, solver="dpmpp_2m", steps=4,
                   guidance_scale=3.0, samples=60, seed=2)
    res = execute(spec)
    assert res.nfe_counted == res.nfe_formula == 60 * 4 * 2
    m = res.metrics
    assert m["rare_rate_truth"] == pytest.approx(model.truth("even")["4"])
    counts = {r["label"]: r["count"] for r in res.histograms if r["group"] == "solver"}
    assert m["rare_rate"] == counts["4"] / 60 and sum(counts.values()) == 60
    ref = {r["label"]: r["count"] for r in res.histograms if r["group"] == "reference"}
    assert m["rare_rate_ref"] == ref["4"] / 60
    assert m["tv_model"] == pytest.approx(0.5 * sum(abs(ref[k] / 60 - model.truth("even")[k]) for k in LABELS))
    for gate in ("gate_truth", "gate_ref", "gate_teacher_vs_truth"):
        assert res.info[gate]["outcome"] in ("PASS", "FAIL", "UNDECIDED")
    assert res.info["model_sha256"] == model.checksum and len(res.samples) == 60 and len(res.samples[0]) == 65


@pytest.mark.slow
def test_bench_rows_spend_each_nfe_target_exactly_and_judge_twice(model):
    from fastdiff_core.worlds.digits.bench import DigitsBench, bench_rows

    bench = DigitsBench(solvers=("euler", "heun"), nfe=(4,), guidance=(3.0,), conditions=("none", "even"), n=100)
    assert bench.parts() == [("none", 1.0), ("even", 3.0)]
    out = list(bench_rows(model, bench))
    assert [k for k, _ in out] == ["reference", "row", "row", "reference", "row", "row"]
    for kind, r in out:
        if kind == "reference":
            assert 0 <= r["label_flip_rate"] <= 1 and r["steps_check"] == 2 * r["steps"]
            continue
        assert r["nfe_per_sample"] == 4 * (2 if r["guidance"] != 1 else 1), r
        assert sum(r["counts"].values()) == 100 and r["rare_lo"] <= r["rare_rate"] <= r["rare_hi"]
        assert {r["gate_truth"], r["gate_ref"]} <= {"PASS", "FAIL", "UNDECIDED"}


@pytest.mark.parametrize("spec, field", [
    (dict(guidance_scale=3.0), "guidance_scale=3.0 needs a condition"),
    (dict(guidance_scale=3.0, world_options={"condition": "even"}, guidance_interval=(0.5, 5.0)), "guidance_interval"),
    (dict(horizon=3), "horizon=3"),
])
def test_what_the_digits_world_refuses(spec, field):
    s = RunSpec(world="digits", **spec)
    assert field in s.refusal()
    with pytest.raises(ValueError, match="world_options.condition"):
        RunSpec(world="digits", world_options={"condition": "eleven"})


def test_commands_refuse_bad_arguments_with_exit_2():
    for argv in (["train", "digits", "--rare-digit", "12"], ["bench", "digits", "--nfe", "0"],
                 ["bench", "digits", "--solvers", "nope"]):
        p = subprocess.run([sys.executable, "-m", "workers.cli", *argv], capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
        assert p.returncode == 2, (argv, p.stderr)
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_model_world_names_the_digit_classifiers_modes_by_its_own_labels():
    """The generic model world reads the digits folder's classifier hook: its modes are the ten digits the
    classifier reads, each counted as the classifier labels it, never the model's conditioning names (13 rows:
    the digits, 'even', 'odd' and the null class 'none', which no classifier output means)."""
    from fastdiff_core.models.loading import load_diffusers_dir
    from fastdiff_core.worlds.model.runner import classify

    loaded = load_diffusers_dir(WEIGHTS_DIR, name="digits")
    assert loaded.interface.class_names[-3:] == ("even", "odd", "none")  # the conditions the bug named modes by
    split = load_split(seed=0)
    images = torch.from_numpy(split.test_images[:200]).unsqueeze(1)
    counts = classify(loaded, images)
    assert list(counts) == [str(d) for d in range(10)]
    clf = load_model(WEIGHTS_DIR).classifier
    top = clf(images).argmax(-1)
    assert counts == {str(d): int((top == d).sum()) for d in range(10)}
