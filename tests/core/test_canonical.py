"""canonical_json, json_stringify and js_number against the reference's outputs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kora.core import canonical_json, js_number, json_stringify
from kora.core.canonical import MAX_DEPTH, _encode

# Expected strings are what a JS engine prints for String(x) / JSON.stringify(x).
JS_NUMBERS: list[tuple[int | float, str]] = [
    (0, "0"),
    (-0.0, "0"),
    (0.0, "0"),
    (1, "1"),
    (-1, "-1"),
    (5.0, "5"),
    (-5.0, "-5"),
    (100, "100"),
    (100.0, "100"),
    (0.1, "0.1"),
    (-0.1, "-0.1"),
    (0.5, "0.5"),
    (1.5, "1.5"),
    (0.1 + 0.2, "0.30000000000000004"),
    (1 / 3, "0.3333333333333333"),
    (123.456, "123.456"),
    (0.000001, "0.000001"),
    (1e-6, "0.000001"),
    (1.5e-6, "0.0000015"),
    (1e-7, "1e-7"),
    (-1e-7, "-1e-7"),
    (1.5e-7, "1.5e-7"),
    (123e-20, "1.23e-18"),
    (0.0001, "0.0001"),
    (0.00001, "0.00001"),
    (1e15, "1000000000000000"),
    (1e16, "10000000000000000"),
    (1e20, "100000000000000000000"),
    (1e21, "1e+21"),
    (-1e21, "-1e+21"),
    (1.5e21, "1.5e+21"),
    (123456789012345680000.0, "123456789012345680000"),
    (1.5e300, "1.5e+300"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (2**53, "9007199254740992"),
    (2**53 + 1, "9007199254740992"),
    (-(2**53) - 1, "-9007199254740992"),
    (2**53 + 2, "9007199254740994"),
    (2**60, "1152921504606847000"),
    (12345678901234567890, "12345678901234567000"),
    (10**21, "1e+21"),
    (10**400, "Infinity"),
    (-(10**400), "-Infinity"),
    (1700000000000, "1700000000000"),
    (4.35, "4.35"),
    (0.000123, "0.000123"),
    (1e-5, "0.00001"),
    (2.5e-5, "0.000025"),
    (9007199254740993.0, "9007199254740992"),
    (1.2345e20, "123450000000000000000"),
    (1.2345e-10, "1.2345e-10"),
    (math.nan, "NaN"),
    (math.inf, "Infinity"),
    (-math.inf, "-Infinity"),
]


@pytest.mark.parametrize(("value", "expected"), JS_NUMBERS, ids=[e for _, e in JS_NUMBERS])
def test_js_number_matches_ecmascript(value: int | float, expected: str) -> None:
    assert js_number(value) == expected


@pytest.mark.parametrize("value", [True, False, "1", None, [1]])
def test_js_number_rejects_non_numbers(value: Any) -> None:
    with pytest.raises(TypeError):
        js_number(value)


@given(st.floats(allow_nan=False, allow_infinity=False))
@settings(max_examples=500)
def test_js_number_round_trips_and_uses_js_layout(value: float) -> None:
    text = js_number(value)
    assert float(text) == value
    assert not text.endswith(".0")
    if "e" in text:
        assert abs(value) >= 1e21 or abs(value) < 1e-6
        assert "e+" in text or "e-" in text
        assert re.search(r"e[+-]0", text) is None  # no zero padding
    else:
        assert value == 0 or 1e-6 <= abs(value) < 1e21


def test_canonical_json_golden_vector(vectors_dir: Path) -> None:
    vector = json.loads((vectors_dir / "canonical_json.json").read_text(encoding="utf-8"))
    value = eval(vector["input_python_literal"])  # a literal written for exactly this use
    assert math.copysign(1.0, value["n"]) == -1.0  # the literal really holds -0
    text = canonical_json(value)
    assert text == vector["expected"]
    assert text.encode("utf-8").hex() == vector["expected_utf8_hex"]


def test_canonical_json_of_json_representable_input(vectors_dir: Path) -> None:
    vector = json.loads((vectors_dir / "canonical_json.json").read_text(encoding="utf-8"))
    text = canonical_json(vector["input"])
    assert text == '{"10":1,"2":2,"B":1,"a":1,"e":1e+21,"f":0.1,"s":1e-7,"u":"é\u2028\\"\\\\\\n"}'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        ({"a": True, "b": 1}, '{"a":true,"b":1}'),
        ([], "[]"),
        ({}, "{}"),
        ((1, "x"), '[1,"x"]'),
        ({"x": math.nan, "y": -math.inf}, '{"x":null,"y":null}'),
        ("\x00\x01\x1f\x7f", '"\\u0000\\u0001\\u001f\x7f"'),
        ("\b\t\n\f\r", '"\\b\\t\\n\\f\\r"'),
        ("\u2028\u2029", '"\u2028\u2029"'),
        ("a\ud800b", '"a\\ud800b"'),
        ("\udfff\udc00é", '"\\udfff\\udc00é"'),
        ("😀", '"😀"'),
        ({"z": {"b": [{"d": 1, "c": 2}], "a": None}}, '{"z":{"a":null,"b":[{"c":2,"d":1}]}}'),
    ],
)
def test_canonical_json_scalars_and_escapes(value: Any, expected: str) -> None:
    assert canonical_json(value) == expected


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    # U+FF61 is after U+1F600 in code points, but before it in UTF-16 (0xD83D < 0xFF61).
    assert canonical_json({"\uff61": 1, "😀": 2}) == '{"😀":2,"\uff61":1}'
    assert canonical_json({"b": 1, "B": 2, "a": 3, "10": 4, "2": 5}) == (
        '{"10":4,"2":5,"B":2,"a":3,"b":1}'
    )


def test_non_str_keys_and_unknown_types_are_rejected() -> None:
    with pytest.raises(TypeError, match="keys must be str"):
        canonical_json({1: "x"})
    with pytest.raises(TypeError, match="not JSON serializable"):
        canonical_json({"a": {1, 2}})
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_stringify({"a": object()})


def test_deep_nesting_is_encoded_without_recursion() -> None:
    depth = 5000
    value: Any = 1
    for _ in range(depth):
        value = [value]
    assert canonical_json(value) == "[" * depth + "1" + "]" * depth
    assert json_stringify(value) == "[" * depth + "1" + "]" * depth


def test_circular_value_is_a_clear_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match=f"deeper than {MAX_DEPTH}"):
        canonical_json(loop)
    with pytest.raises(ValueError, match="circular"):
        json_stringify({"a": loop})


def test_json_stringify_keeps_insertion_order_and_js_numbers() -> None:
    assert json_stringify({"b": 5.0, "a": [1e-7, -0.0, 2**53 + 1]}) == (
        '{"b":5,"a":[1e-7,0,9007199254740992]}'
    )
    assert json_stringify({"t": "x\ud800"}) == '{"t":"x\\ud800"}'
    assert json_stringify("plain") == '"plain"'
    assert json_stringify(1e21) == "1e+21"


def test_json_stringify_frame_vector(vectors_dir: Path) -> None:
    frames = json.loads((vectors_dir / "json_frames.json").read_text(encoding="utf-8"))
    for frame in frames["frames"]:
        assert json_stringify(frame["decoded"]) == frame["frame"]


# JSON values as Python builds them: floats of every kind, big ints, awkward strings.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text()
    | st.sampled_from(["\ud800", "a\udfffb", "1e5", ":1.0,", "[12345678901234567]"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=25,
)


@given(json_values)
@settings(max_examples=500)
def test_json_stringify_fast_path_equals_exact_encoder(value: Any) -> None:
    assert json_stringify(value) == _encode(value, sort_keys=False)


@given(json_values)
@settings(max_examples=300)
def test_json_stringify_output_parses_back_to_the_js_value(value: Any) -> None:
    def normalise(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, int | float):  # every JS number is a double
            return float(v) if math.isfinite(v) else None
        if isinstance(v, list):
            return [normalise(x) for x in v]
        return {k: normalise(x) for k, x in v.items()}

    text = json_stringify(value)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        pytest.fail(f"raw surrogate in output {text!r}")
    parsed = json.loads(text)
    assert normalise(parsed) == normalise(value)


def test_fast_path_handles_common_values_and_defers_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kora.core.canonical as canonical

    calls: list[object] = []
    real_encode = canonical._encode

    def spy(value: object, *, sort_keys: bool) -> str:
        calls.append(value)
        return real_encode(value, sort_keys=sort_keys)

    monkeypatch.setattr(canonical, "_encode", spy)
    common = {"a": [1, 2.5, 0.001, "é", None, True], "b": {"c": 2**53}}
    assert json_stringify(common) == '{"a":[1,2.5,0.001,"é",null,true],"b":{"c":9007199254740992}}'
    assert calls == []
    for needs_exact in ([5.0], [1e-5], [1e16], [2**53 + 1], ["\ud800"], [(1,)], [math.nan]):
        assert json_stringify(needs_exact) == real_encode(needs_exact, sort_keys=False)
    assert len(calls) == 7


# ---------------------------------------------------------------- canonical_json's fast path

# Keys that sort differently by UTF-16 code units and by code points, and non-str keys.
canonical_keys = st.text(max_size=6) | st.sampled_from(["\U0001f600", "\uff61", "\ue000", "é"])
canonical_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(canonical_keys, children, max_size=5)
        | st.tuples(children, children)
    ),
    max_leaves=25,
)


@given(canonical_values)
@settings(max_examples=500)
def test_canonical_json_fast_path_equals_exact_encoder(value: Any) -> None:
    assert canonical_json(value) == _encode(value, sort_keys=True)


@pytest.mark.parametrize(
    "value",
    [
        {"\uff61": 1, "\U0001f600": 2},  # UTF-16 puts the emoji first
        {"a": 1.0, "b": 1e21},
        {"a": [2**60]},
        {"s": "\ud800"},
        {"k": {"x": -0.0}},
    ],
)
def test_canonical_json_fast_path_defers_what_it_cannot_write(value: Any) -> None:
    assert canonical_json(value) == _encode(value, sort_keys=True)


def test_canonical_json_refuses_non_str_keys_on_the_fast_path_too() -> None:
    with pytest.raises(TypeError):
        canonical_json({1: "a"})
    with pytest.raises(TypeError):
        canonical_json([{"a": {None: 1}}])


def test_canonical_json_uses_the_c_encoder_for_common_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kora.core.canonical as canonical

    calls: list[object] = []
    exact = canonical._encode
    monkeypatch.setattr(canonical, "_encode", lambda v, **kw: calls.append(v) or exact(v, **kw))
    assert canonical_json({"b": [1, 2.5, None], "a": {"z": True, "y": "é"}}) == (
        '{"a":{"y":"é","z":true},"b":[1,2.5,null]}'
    )
    assert calls == []
    canonical_json({"a": 1.0})
    assert calls == [{"a": 1.0}]
