"""utils/schema.py, the field checks behind the checkpoint, feature-file and index readers:
hand-written objects and the exact messages expected for them."""
from __future__ import annotations

import pytest

from vireid.errors import CheckpointError
from vireid.utils.schema import (BOOL, DICT, NONNEG_INT, POS_INT, STR, check_fields, describe,
                                 each, is_exactly, list_of, one_of, opt, optional)

SCHEMA = {
    "count": NONNEG_INT,
    "modality": one_of("rgb", "ir"),
    "feature": optional({"F_shape": list_of(POS_INT, 3), "G_dim": POS_INT}),
    "shards": each({"F": STR, "count": NONNEG_INT}),
    opt("flip"): BOOL,
    opt("config"): DICT,
}
GOOD = {"count": 3, "modality": "ir", "feature": {"F_shape": [64, 4, 2], "G_dim": 64},
        "shards": [{"F": "a.npy", "count": 1}, {"F": "b.npy", "count": 2}]}


def check(obj):
    check_fields(obj, SCHEMA, "M", CheckpointError)


def test_a_good_object_and_optional_fields_pass():
    check(GOOD)
    check({**GOOD, "flip": True, "config": {}, "extra": "unchecked"})
    check({**GOOD, "feature": None, "shards": []})


@pytest.mark.parametrize("change, message", [
    ({"count": None}, "M: field 'count': expected an integer ≥ 0, found null"),
    ({"count": "sixty-one"}, "M: field 'count': expected an integer ≥ 0, found 'sixty-one' (str)"),
    ({"count": True}, "M: field 'count': expected an integer ≥ 0, found True (bool)"),
    ({"count": -1}, "M: field 'count': expected an integer ≥ 0, found -1 (int)"),
    ({"modality": "uv"}, "M: field 'modality': expected one of 'rgb', 'ir', found 'uv' (str)"),
    ({"feature": {"F_shape": [64, 4], "G_dim": 64}},
     "M: field 'feature.F_shape': expected a list of 3 items, each an integer ≥ 1, found "
     "[64, 4] (list)"),
    ({"feature": {"F_shape": [64, 4, 2]}},
     "M: field 'feature.G_dim' is missing (expected an integer ≥ 1)"),
    ({"feature": 5}, "M: field 'feature': expected a mapping, found 5 (int)"),
    ({"shards": [{"F": "a.npy", "count": 1}, {"F": 7, "count": 2}]},
     "M: field 'shards[1].F': expected a string, found 7 (int)"),
    ({"shards": {"F": "a.npy"}}, "M: field 'shards': expected a list of mappings, found "
                                 "{'F': 'a.npy'} (dict)"),
    ({"flip": "yes"}, "M: field 'flip': expected true or false, found 'yes' (str)"),
])
def test_the_first_bad_field_is_named(change, message):
    with pytest.raises(CheckpointError) as err:
        check({**GOOD, **change})
    assert str(err.value) == message


def test_a_missing_field_and_a_non_mapping():
    obj = dict(GOOD)
    del obj["shards"]
    with pytest.raises(CheckpointError, match=r"^M: field 'shards' is missing \(expected a "
                                              r"list of mappings\)$"):
        check(obj)
    with pytest.raises(CheckpointError, match=r"^M: field '\(top level\)': expected a mapping, "
                                              r"found \[1\] \(list\)$"):
        check([1])


def test_long_values_are_cut_and_counted():
    text = describe("x" * 1000)
    assert text == "'" + "x" * 59 + "… (1002 characters) (str)"


def test_is_exactly_compares_type_and_value():
    assert is_exactly(1, 1) and is_exactly("vireid-index", "vireid-index")
    assert not is_exactly(True, 1) and not is_exactly(1.0, 1) and not is_exactly([1], 1)
