"""A user's model interface (fastdiff_core.models.interface) is checked where it is made: its scalar fields
against their declarations (``interface.FIELDS``, registry.Option: the validation layer), its shapes and the
rules across fields by hand; every refusal names the field, the value and what is allowed."""

import pytest

from fastdiff_core.models.interface import FIELDS, ModelInterface, PathDecl

GOOD = {"prediction": "eps", "path": {"kind": "vp_cosine"}, "sample_shape": [1, 8, 8]}


@pytest.mark.parametrize(("change", "message"), [
    ({"prediction": "noise"}, "prediction='noise' is not allowed; expected one of ['eps', 'x0', 'v', 'flow']"),
    ({"prediction": 3}, "prediction=3 has type int; expected one of"),
    ({"time_scale": 0}, "time_scale=0.0 is out of range; expected a number in (0.0, inf]"),
    ({"time_scale": float("nan")}, "time_scale=nan is not finite"),
    ({"num_classes": -1}, "num_classes=-1 is out of range; expected an integer in [0, inf]"),
    ({"num_classes": True}, "num_classes=True has type bool"),
    ({"num_classes": 3, "null_class": True}, "null_class=True has type bool"),  # a bool is no class index
    ({"num_classes": 3, "null_class": -1}, "null_class=-1 is out of range; expected an integer in [0, inf] or null"),
    ({"null_class": 0}, "null_class=0 given, but num_classes=0"),
    ({"path": {"kind": "ve"}}, "path.kind='ve' is not allowed; expected one of ['vp_discrete', 'vp_linear'"),
    ({"sample_shape": [0, 8]}, "sample_shape=(0, 8) must be a tuple of positive integers"),
])
def test_a_bad_interface_is_refused_naming_the_field_the_value_and_what_is_allowed(change, message):
    with pytest.raises(ValueError) as e:
        ModelInterface.from_dict({**GOOD, **change})
    assert message in str(e.value), str(e.value)


def test_a_good_interface_round_trips_and_its_declarations_match_the_dataclass():
    m = ModelInterface.from_dict({**GOOD, "time_scale": 999, "num_classes": 4, "null_class": 3})
    assert ModelInterface.from_dict(m.to_dict()) == m and m.labels == (0, 1, 2) and m.guidable
    defaults = ModelInterface(prediction="x0", path=PathDecl("rectified_flow"), sample_shape=(2,))
    assert all(getattr(defaults, name) == opt.default for name, opt in FIELDS.items() if name != "prediction")
