"""Virtual meter formulas: naming rules, rejected formulas with clear messages,
vectorised evaluation where a missing input is never a silent zero."""

import re

import numpy as np
import pytest

from app.formula import FormulaError, dependency_order, parse_formula, validate_formulas

NAN = np.nan


def test_names_bare_bracketed_and_quoted():
    f = parse_formula('main - ([AHU-1 supply] + "Chiller 2.a") + \'x]y\' * 2')
    assert f.names == ("main", "AHU-1 supply", "Chiller 2.a", "x]y")


def test_functions_and_a_meter_named_like_one():
    f = parse_formula("max(a - b, 0) + abs(c) + min + [max]")
    assert f.names == ("a", "b", "c", "min", "max")
    out = f.evaluate({"a": np.array([5.0, 1.0]), "b": np.array([2.0, 3.0]), "c": np.array([-1.0, 1.0]),
                      "min": np.array([0.5, 0.5]), "max": np.array([0.25, 0.25])})
    assert out.tolist() == [3 + 1 + 0.75, 0 + 1 + 0.75]


def test_evaluation_hand_computed_with_missing_input():
    f = parse_formula("main - (chiller + ahu)")
    out = f.evaluate({
        "main": np.array([10.0, 10.0, 12.0, NAN]),
        "chiller": np.array([3.0, 4.0, 5.0, 1.0]),
        "ahu": np.array([2.0, NAN, 1.5, 1.0]),
    })
    assert out[0] == 5.0 and out[2] == 5.5
    assert np.isnan(out[1]) and np.isnan(out[3])


def test_missing_input_stays_missing_even_when_algebra_cancels_it():
    f = parse_formula("a - a + b")
    out = f.evaluate({"a": np.array([NAN, 1.0]), "b": np.array([2.0, 2.0])})
    assert np.isnan(out[0]) and out[1] == 2.0


def test_division_by_a_constant_is_fine():
    assert parse_formula("(a + b) / 4").evaluate({"a": np.array([2.0]), "b": np.array([6.0])}).tolist() == [2.0]


@pytest.mark.parametrize("text, message", [
    ("a / b", "division by meter 'b' risks division by zero"),
    ("a / (2 - 2)", "division by zero"),
    ("a / 0", "division by zero"),
    ("sqrt(a)", "unsupported function sqrt()"),
    ("a ** 2", "unsupported operator"),
    ("a ^ 2", "unsupported operator"),
    ("a % 2", "unsupported operator '%'"),
    ("a +", "not a valid expression"),
    ("2 a", "not a valid expression"),
    ("[a b", "unclosed '['"),
    ('"a', "unclosed quote"),
    ("a ; b", "unexpected character ';'"),
    ("42", "refers to no meter"),
    ("", "formula is empty"),
    ("abs(a, b)", "abs() takes exactly 1"),
    ("[x](y)", "a meter is not a function"),
])
def test_rejected_formulas_say_why(text, message):
    with pytest.raises(FormulaError, match=re.escape(message)):
        parse_formula(text)


def test_validate_formulas_reports_unknown_names_cycles_and_syntax():
    errors = validate_formulas(
        {
            "AHU-net": "[AHU-1] - [AHU-9]",
            "A": "B + main",
            "B": "[C x] * 2",
            "C x": "A - main",
            "self": "self + main",
            "bad": "main / other",
            "ok": "main - [AHU-net]",
        },
        {"main", "AHU-1", "other"},
    )
    assert errors == [
        "meters[AHU-net].formula: unknown meter 'AHU-9'",
        "meters[self].formula: refers to itself",
        "meters[bad].formula: division by meter 'other' risks division by zero: divide only by a non-zero constant",
        "meters[A].formula: cycle A -> B -> C x -> A",
    ]


def test_valid_site_has_no_errors_and_a_dependency_order():
    formulas = {"net": "main - hvac", "hvac": "[AHU 1] + chiller", "half": "net / 2"}
    assert validate_formulas(formulas, {"main", "AHU 1", "chiller"}) == []
    order = dependency_order({k: parse_formula(v) for k, v in formulas.items()})
    assert order.index("hvac") < order.index("net") < order.index("half")
