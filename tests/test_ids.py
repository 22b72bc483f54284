"""Ids cross boundaries only through ``store.ids`` (issue 13 item 1): the store API takes ids, never paths,
and no input — traversal, absolute paths, NUL, overlong, unicode look-alikes, wrong types — makes it
touch a file outside its root or a record it was not asked about. Real stores in temporary directories."""

from __future__ import annotations

import os
import pathlib
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastdiff_core.spec import RunSpec
from store import Store, ids
from tests.fuzzing import FUZZ

BAD_IDS = [
    "../experiments/eEVIL", "../runs/r0123456789ab", "/etc/passwd", "e0123456789ab/../x", "e0123456789ab\x00",
    "\x00", "e" * 300, "r" + "0" * 300, "", "e0123456789AB", "e0123456789a", "e0123456789abc",
    "e٠١٢٣٤٥٦٧٨٩ab",  # Arabic-Indic digits: \d would match them, the pattern does not
    "ｅ0123456789ab", "e0123456789ab\n", " e0123456789ab", "e0123456789ab.json", ".", "..",
    12345, 1.5, None, True, b"e0123456789ab", ["e0123456789ab"], {"id": "e0123456789ab"},
]


def tree(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def stored(tmp_path):
    """A store in tmp_path/store beside a sentinel file outside it; one experiment with one run."""
    (tmp_path / "outside.json").write_text('{"keep": true}')
    s = Store(tmp_path / "store")
    exp, (rid,) = s.new_experiment("victim", RunSpec(samples=64, steps=2))
    return s, exp, rid


def test_the_pattern():
    for kind, prefix in ids.KINDS.items():
        new = ids.new_id(prefix)
        assert ids.is_id(new, kind) and ids.check(new, kind) == new
        for other in set(ids.KINDS) - {kind}:
            assert not ids.is_id(new, other)
    for bad in BAD_IDS:
        assert not ids.is_id(bad)
        with pytest.raises(ValueError, match=r"exp_id=.* is not a valid id: expected 'e' followed by 12"):
            ids.check(bad, "exp_id")
    msg = str(pytest.raises(ValueError, ids.check, "x" * 10_000, "run_id").value)
    assert len(msg) < 200 and "10002 characters" in msg  # an overlong id is not echoed whole


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_store_api_refuses_every_bad_id_and_touches_nothing(stored, bad):
    s, exp, rid = stored
    before = tree(s.root.parent)
    calls = [
        lambda: s.experiment(bad), lambda: s.run(bad), lambda: s.rename_experiment(bad, "x"),
        lambda: s.delete_experiment(bad), lambda: s.record_result(bad, "failed", error="x"),
        lambda: s.runs(run_ids=[rid, bad]), lambda: s.metrics([bad]), lambda: s.histograms([rid, bad]),
        lambda: s.latency([bad]), lambda: s.export_bundle(bad, s.root.parent / "x.zip"),
    ] + ([lambda: s.runs(exp_id=bad), lambda: s.sweeps(bad)] if bad is not None else [])  # None: all of them
    for call in calls:
        with pytest.raises(ValueError, match=r"(exp|run)_id=.*is not a valid id"):
            call()
    assert tree(s.root.parent) == before
    assert s.experiment(exp)["name"] == "victim" and s.run(rid)["status"] == "queued"


def test_a_tampered_record_cannot_lead_the_store_outside_its_root(stored):
    """delete_experiment follows the run ids inside the experiment's record: a hand-edited record
    naming paths is unreadable (kept, listed), and deleting it deletes nothing."""
    s, exp, rid = stored
    victim, (victim_run,) = s.new_experiment("other", RunSpec(samples=64, steps=2))
    import json

    path = s.inbox_dir / "journal.jsonl"
    header, first, *rest = path.read_bytes().splitlines(keepends=True)
    seal, kind, body = first.split(b" ", 2)
    rec = json.loads(body)
    rec["experiment"]["run_ids"] += ["../../outside", f"../runs/{victim_run}", f"../experiments/{victim}", "/etc/passwd"]
    path.write_bytes(header + b" ".join([seal, kind, json.dumps(rec).encode()]) + b"\n" + b"".join(rest))
    with pytest.raises(ValueError, match="is not a stored experiment"):
        s.delete_experiment(exp)
    assert (s.root.parent / "outside.json").exists() and exp in s.unreadable()
    assert s.experiment(victim)["name"] == "other" and s.run(victim_run)["status"] == "queued"
    assert s.experiment(exp) is None and s.run(rid) is None


def test_store_files_are_private(stored):
    s, _, rid = stored
    s.record_result(rid, "failed", error="x")
    s.compact()
    for p in [s.root, *s.root.rglob("*")]:
        mode = os.stat(p).st_mode & 0o777
        assert mode & 0o077 == 0, f"{p} is {oct(mode)}"


ID_LIKE = st.one_of(
    st.sampled_from(BAD_IDS),
    st.text(max_size=40),
    st.text(alphabet="er0123456789abcdef./\\\x00", min_size=10, max_size=16),
    st.builds(lambda p, s: p + s, st.sampled_from(["e", "r", "s", "../", "/", "./"]), st.text(max_size=20)),
    st.integers(), st.none(), st.lists(st.text(max_size=14), max_size=3),
)


@FUZZ
@given(value=ID_LIKE)
def test_fuzz_ids_through_the_store_api(value):
    """Any value given as an id: a valid id or ValueError, never another exception, never a file elsewhere."""
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        check_one_id(value, pathlib.Path(d))


def check_one_id(value, base: pathlib.Path) -> None:
    s = Store(base / "store")
    before = tree(base)
    for call in (lambda: s.experiment(value), lambda: s.run(value), lambda: s.record_result(value, "failed"),
                 lambda: s.delete_experiment(value), lambda: s.runs(run_ids=[value])):
        try:
            call()
        except ValueError:
            pass  # not an id, or no such experiment
    after = tree(base)
    new = set(after) - set(before)
    assert new <= {"store/inbox/journal.jsonl", "store/inbox/.rotate.lock", "store/results.lock"}, new  # a line
    assert ids.is_id(value, "run_id") or not new


def test_sweep_axes_keep_any_bounded_json_value(tmp_path):
    """The client API sweeps any RunSpec field, pairs and objects included; what cannot be stored is refused."""
    s = Store(tmp_path)
    exp = s.create_experiment("gi", [RunSpec(guidance_interval=(0.3, 5.0)), RunSpec()],
                              sweep={"guidance_interval": [(0.3, 5.0), None]})
    assert s.sweeps(exp)["axes"][0] == '{"guidance_interval": [[0.3, 5.0], null]}'
    with pytest.raises(ValueError, match=r"sweep\['steps'\] value .* must be a JSON value"):
        s.create_experiment("bad", RunSpec(), sweep={"steps": [object()]})
