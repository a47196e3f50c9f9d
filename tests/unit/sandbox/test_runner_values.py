"""What a call test's return value becomes before it is compared: plain Python values (issue 20)."""

import json

import numpy as np
from lorafleet.shared.sandbox._runner import plain
from lorafleet.shared.sandbox.compare import values_match


def test_numpy_scalars_become_python_values_of_their_kind():
    assert type(plain(np.int64(9))) is int and plain(np.int64(9)) == 9
    assert type(plain(np.uint8(7))) is int
    assert type(plain(np.float64(0.5))) is float and type(plain(np.float32(0.5))) is float
    assert plain(np.bool_(True)) is True
    assert plain(np.int64(2**62)) == 2**62  # no float on the way


def test_arrays_and_nested_containers():
    assert plain(np.arange(4).reshape(2, 2)) == [[0, 1], [2, 3]]
    assert plain(np.array([])) == []
    got = plain({"a": (np.int64(1), [np.float64(0.25)]), np.int64(3): np.array([True, False]), "s": "x", "n": None})
    assert got == {"a": [1, [0.25]], 3: [True, False], "s": "x", "n": None}
    assert json.loads(json.dumps(got)) == {"a": [1, [0.25]], "3": [True, False], "s": "x", "n": None}


def test_converted_values_meet_the_comparison_rules():
    assert values_match(plain(np.int64(9)), 9)
    assert not values_match(plain(np.float64(9.0)), 9)  # a float for an integer, however it was made
    assert not values_match(plain(np.bool_(True)), 1)
    assert values_match(plain(np.float32(0.1)), 0.1)  # float32 precision is within 1e-6


def test_other_objects_are_left_alone():
    class Thing:
        pass

    t = Thing()
    assert plain(t) is t  # json's default (repr) handles it later
    assert plain("abc") == "abc" and plain(b"x") == b"x"
