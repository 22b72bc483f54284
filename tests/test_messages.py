"""The service's messages are declared once (workers.messages): the check the workers run and the
published JSON schema agree on every message (property test against jsonschema), the declarations use
only keywords the check reads, and the batch payload the workers read is checked through them."""

import copy
import json

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers import fairqueue, messages

GOOD = {
    "run_task": ["r0123456789ab", json.dumps({"steps": 4})],
    "batch_task": [{"batch_id": "b0123456789ab", "exp_id": "e0123456789ab",
                    "runs": [["r0123456789ab", "{}"], ["r00000000000f", "{\"seed\": 1}"]]}],
    "outcome": {"run_id": "r0123456789ab", "status": "done", "result": {"device": "cpu"}, "error": None,
                "worker": "w1"},
    "run_result": {"spec": {"steps": 4}, "device": "cpu", "wall_s": 0.5, "nfe_counted": 40, "nfe_formula": 40.0,
                   "metrics": {"tv": 0.1, "note": "x"}, "histograms": [
                       {"group": "g", "label": "a", "count": 3, "n": 10, "rate": 0.3, "lo": 0.1, "hi": 0.5, "truth": None}],
                   "latency": [{"what": "nfe", "seconds": 0.01, "batch": 4, "device": "cpu"}],
                   "samples": [[0.1, 0.2], [1, 2]], "verdict": None, "info": {}, "schema_version": 2},
}
VALIDATORS = {name: jsonschema.Draft202012Validator({**messages.messages_schema(), "$ref": f"#/$defs/{name}"})
              for name in messages.MESSAGES}
ODD = st.one_of(st.none(), st.booleans(), st.integers(-2, 20), st.text(max_size=15), st.sampled_from(
    ["r0123456789ab", "e0123456789ab", "b0123456789ab", "r0123456789ab\n", "R0123456789AB", "done", "queued",
     "x" * 201, "cancelled", "{}"]), st.lists(st.text(max_size=3), max_size=3), st.just({}))


def paths(value, prefix=()):
    """Every place in a JSON value: key paths of objects and index paths of lists."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, (*prefix, i))


def mutated(draw, message):
    """``message`` with one place replaced, removed, or given an extra element or key."""
    value = copy.deepcopy(message)
    where = draw(st.sampled_from(list(paths(value))))
    if not where:
        return draw(ODD)
    parent = value
    for step in where[:-1]:
        parent = parent[step]
    action = draw(st.sampled_from(["replace", "remove", "extra"]))
    if action == "replace":
        parent[where[-1]] = draw(ODD)
    elif action == "remove":
        del parent[where[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.sampled_from(["extra", "run_id", "status"]))] = draw(ODD)
    else:
        parent.append(draw(ODD))
    return value


@pytest.mark.parametrize("name", sorted(messages.MESSAGES))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_check_and_the_published_schema_agree(name, data):
    value = mutated(data.draw, GOOD[name]) if data.draw(st.booleans()) else GOOD[name]
    try:
        messages.check(messages.MESSAGES[name], value, name)
        ours = True
    except ValueError:
        ours = False
    assert ours == VALIDATORS[name].is_valid(value), value


def test_sixteen_runs_make_the_largest_batch():
    batch = {**GOOD["batch_task"][0], "runs": [[f"r{i:012x}", "{}"] for i in range(messages.MAX_BATCH)]}
    assert fairqueue.check_batch(batch) == batch and VALIDATORS["batch_task"].is_valid([batch])
    batch["runs"].append(["r0000000000ff", "{}"])
    with pytest.raises(ValueError, match=r"batch.runs=.* must be 1 to 16 \[run_id, spec_json\] pairs"):
        fairqueue.check_batch(batch)
    assert not VALIDATORS["batch_task"].is_valid([batch])


def test_messages_name_the_field_the_value_and_what_is_allowed():
    bad = {**GOOD["batch_task"][0], "batch_id": "../x"}
    with pytest.raises(ValueError, match=r"batch.batch_id='\.\./x' is not 'b' and 12 lowercase hex digits"):
        fairqueue.check_batch(bad)
    with pytest.raises(ValueError, match=r"outcome.run_id='r0123456789ab\\n' is not a valid run id"):
        messages.check(messages.MESSAGES["outcome"], {**GOOD["outcome"], "run_id": "r0123456789ab\n"}, "outcome")
    with pytest.raises(ValueError, match=r"outcome.status='queued' is not one of \['done', 'failed', 'cancelled'\]"):
        messages.check(messages.MESSAGES["outcome"], {**GOOD["outcome"], "status": "queued"}, "outcome")
    with pytest.raises(ValueError, match="'extra' unknown"):
        messages.check(messages.MESSAGES["outcome"], {**GOOD["outcome"], "extra": 1}, "outcome")


def test_a_declaration_the_check_cannot_read_is_refused():
    with pytest.raises(ValueError, match=r"uses \['multipleOf'\], which check_declared\(\) does not check"):
        messages.check({"type": "integer", "multipleOf": 2}, 3, "x")
    with pytest.raises(ValueError, match="anchored"):
        messages.check({"type": "string", "pattern": "b[0-9]"}, "b1", "x")


@pytest.mark.parametrize("kind", ["run_id", "exp_id", "sweep_id"])
@settings(max_examples=200, deadline=None)
@given(value=st.one_of(st.from_regex(r"[ers][0-9a-fA-F]{11,13}\n?", fullmatch=True), st.text(max_size=14),
                       st.integers(), st.none()))
def test_declared_ids_are_the_store_s_one_pattern(kind, value):
    """The messages' id declarations accept exactly what store.ids (the one pattern, STYLE rule 14) does."""
    from store import ids

    try:
        messages.check(messages.id_schema(kind), value, kind)
        declared = True
    except ValueError:
        declared = False
    assert declared == ids.is_id(value, kind), value


def test_a_run_result_and_a_stored_outcome_are_checked_by_their_declarations():
    """store.records checks a RunResult and an outcome against the declarations published here
    ($defs/run_result, the outcome's fields): one definition, each error naming the field, the value and
    what is allowed."""
    from store import records

    assert messages.MESSAGES["run_result"] is records.RESULT
    assert {k: v for k, v in messages.MESSAGES["outcome"]["properties"].items() if k != "run_id"} == records.OUTCOME_FIELDS
    good = GOOD["run_result"]
    assert records.check_result(good)["histograms"] == good["histograms"]
    assert records.check_result({**good, "samples": [[float(np.float32(0.5)), np.float64(2.0)]]})  # float subclasses
    for change, needle in [({"device": []}, "result.device=[] is not a string of at most 200 characters"),
                           ({"wall_s": -1}, "result.wall_s=-1 is not a number >= 0"),
                           ({"histograms": [{"count": -1}]}, "result.histograms[0].count=-1 is not a number >= 0"),
                           ({"metrics": {"a": [1]}}, "result.metrics['a']=[1] is not a number, or null or a string"),
                           ({"samples": [[1, None]]}, "result.samples[0][1]=None is not a number"),
                           ({"samples": [[0.5], [1.5, True]]}, "result.samples[1][1]=True is not a number"),
                           ({"schema_version": True}, "result.schema_version=True is not an integer >= 1"),
                           ({"spec": {"steps": 0}}, "result.spec: steps=0 must be an integer in [1, 1000]")]:
        with pytest.raises(ValueError) as e:
            records.check_result({**good, **change})
        assert needle in str(e.value), (needle, str(e.value))
        assert not VALIDATORS["run_result"].is_valid({**good, **change}) or "spec" in change  # RunSpec checks the spec
    with pytest.raises(ValueError, match=r"outcome.error=5 is not null or a string of at most 100,000 characters"):
        records.check_outcome({"status": "failed", "error": 5})
    with pytest.raises(ValueError, match=r"^status='queued' is not one of \['done', 'failed', 'cancelled'\]"):
        records.check_outcome({"status": "queued"}, "")  # what Store.record_result is given
