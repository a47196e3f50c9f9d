import pytest
from lorafleet.shared.sandbox.compare import exact_match, outputs_match, tokens_match, values_match


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        ("1 2 3\n", "1 2 3"),
        ("1\n2\n3", "1 2   3\n\n"),
        ("0.3333333", "0.33333333333"),  # within 1e-6 absolute
        ("1000000.5", "1000000.4"),  # within 1e-6 relative
        ("1e3", "1000.0"),  # the expected value is a float: any number form within 1e-6
        ("2", "2.000000"),
        ("+007", "7"),  # integer tokens compare by value: sign and leading zeros are fine
        ("-0", "0"),
        ("1" * 5000, "1" * 5000 + " "),  # past int()'s 4300-digit limit
        ("YES\n", "YES"),
        ("nan", "nan"),
        ("", "\n"),
    ],
)
def test_tokens_match(actual, expected):
    assert tokens_match(actual, expected)


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        ("1 2", "1 2 3"),
        ("0.33", "0.3333"),
        ("yes", "YES"),
        ("123456789012345678901", "123456789012345678900"),  # integers compare exactly, never as floats
        ("1.5", "abc"),
        ("12", "1 2"),
        # an integer is exact: no float or exponent form passes, however close (issue 20)
        ("5000050001.0", "5000050000"),
        ("5000050000.0", "5000050000"),
        ("1e18", "1000000000000000001"),
        ("1e18", "1000000000000000000"),
        ("1" * 4999 + "2", "1" * 5000),
        # only decimal numbers are numbers: float() would take these
        ("inf", "Infinity"),
        ("1_0", "10.0"),
        ("NaN", "nan"),
    ],
)
def test_tokens_mismatch(actual, expected):
    assert not tokens_match(actual, expected)


def test_exact_mode_keeps_whitespace_but_not_line_endings():
    assert exact_match("a b\r\n", "a b")
    assert not exact_match("a  b", "a b")
    assert not outputs_match("1.0000001", "1.0", exact=True)
    assert outputs_match("1.0000001", "1.0", exact=False)


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        ((1, 2), [1, 2]),  # tuple vs list after JSON normalisation
        ([0.1 + 0.2, 1], [0.3, 1]),
        ({"a": (1.0000000001,)}, {"a": [1.0]}),
        (15, 15.0),  # an int where a float is expected
        (14.9999999999, 15.0),
        (5, [5]),  # APPS wraps a call's expected value in a list
        ("x", "x"),
    ],
)
def test_values_match(actual, expected):
    assert values_match(actual, expected)


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        (True, 1),  # bool is not an int here
        ([1, 2], [2, 1]),
        (0.31, 0.3),
        ({"a": 1}, {"a": 1, "b": 2}),
        (10**20, 10**20 + 1),
        # an integer is exact (issue 20): a float never passes for it, however close
        (14.999999999999993, 15),
        (15.0, 15),
        (5000050001.0, 5000050000),
        (1e18, 10**18),
        ({"a": (1.0000000001,)}, {"a": [1]}),
        (1, True),
        (1.0, True),
        ("1", 1),
        ([1.0], [[1]]),
    ],
)
def test_values_mismatch(actual, expected):
    assert not values_match(actual, expected)


def test_values_exact_mode():
    assert values_match((1, 2), [1, 2], exact=True)  # normalisation still applies
    assert not values_match(0.1 + 0.2, 0.3, exact=True)
    assert not values_match(5, [5], exact=True)
    assert not values_match(1.0, 1, exact=True)
    assert not values_match(True, 1, exact=True)
    assert not values_match([1], [1.0], exact=True)
