"""JSON text exactly as the Kora.js reference produces it (spec 3.2, 2.2, Appendix A).

Two outputs matter:

* ``canonical_json`` is the reference's ``canonicalize``: object keys sorted by UTF-16 code
  units, no whitespace.  Its UTF-8 bytes are what the content id hashes, so one differing
  character changes every id.
* ``json_stringify`` is ``JSON.stringify``: keys in insertion order, no whitespace.  The JSON
  codec uses it so that our frames are byte-identical to the reference's.

Both format numbers as ECMAScript ``Number.prototype.toString`` does (``js_number``) and escape
strings as ``JSON.stringify`` does.  Python's ``json`` module differs on both counts (``1e-07``,
``5.0``, raw lone surrogates), so the exact encoder below is our own.  ``json_stringify`` runs
``json.dumps`` first because it is several times faster, and falls back to the exact encoder
whenever the fast output could differ.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from kora.core.hlc import utf16_key

__all__ = [
    "MAX_DEPTH",
    "canonical_json",
    "fast_path_is_exact",
    "js_number",
    "json_stringify",
    "json_stringify_checked",
]

#: Containers nested deeper than this are rejected (this also catches circular values).
MAX_DEPTH: Final = 10_000

# Integers of this magnitude or less are exact doubles, so JS prints them digit for digit.
_MAX_EXACT_INT: Final = 2**53

_encode_basestring: Callable[[str], str] = json.encoder.encode_basestring
# Values with more containers than this skip the fast path's pre-check (and so also a
# circular value, which the exact encoder then reports).
_FAST_PATH_MAX_CONTAINERS: Final = 1_000_000

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# In text without characters from U+D800 up, code-point order is UTF-16 order and there is
# no lone surrogate to escape, so the C encoder's sorted output is the canonical one.
_HIGH_CHARACTER: Final = re.compile("[\ud800-\U0010ffff]")
_sorted_encoder: Final = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)
# json.dumps with these arguments would build its encoder on every call (about a microsecond
# each, several calls per operation on a server).  No cycle and no NaN gets past the checks
# that run before either encoder.
_insertion_order_encoder: Final = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, allow_nan=False, separators=(",", ":")
)


def js_number(x: int | float) -> str:
    """Format a number as ECMAScript ``Number.prototype.toString`` does.

    Integers beyond 2**53 are first rounded to the nearest double, as a JS number literal
    would be.  ``NaN`` and infinities give ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``
    (the JSON encoders turn them into ``null`` instead).

    Args:
        x: An ``int`` or ``float`` (``bool`` is rejected: JSON writes it as true/false).

    Returns:
        The shortest decimal that round-trips, in JS's layout: ``5``, ``0.1``, ``1e+21``,
        ``1e-7``, ``12345678901234567000``.

    Raises:
        TypeError: If ``x`` is not an int or float, or is a bool.
    """
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise TypeError(f"js_number expects an int or float, got {type(x).__name__}")
    if isinstance(x, int):
        if -_MAX_EXACT_INT <= x <= _MAX_EXACT_INT:
            return str(int(x))
        try:
            x = float(x)
        except OverflowError:
            return "Infinity" if x > 0 else "-Infinity"
    return _js_float(x)


def _js_float(x: float) -> str:
    if x != x:
        return "NaN"
    if x == math.inf:
        return "Infinity"
    if x == -math.inf:
        return "-Infinity"
    integral = x.is_integer()
    if integral and -_MAX_EXACT_INT <= x <= _MAX_EXACT_INT:
        return str(int(x))  # also maps -0.0 to "0"
    text = repr(x)
    if "e" not in text and not integral:
        # Non-integral and 1e-4 <= |x| < 1e16: Python's fixed notation is JS's.
        return text
    sign = ""
    if text[0] == "-":
        sign, text = "-", text[1:]
    mantissa, _, exp_text = text.partition("e")  # exp_text is "" for 9007199254740994.0
    int_part, _, frac_part = mantissa.partition(".")
    digits = int_part + frac_part
    # ``point`` is where the decimal point goes: value = 0.<digits> * 10**point.
    point = len(int_part) + int(exp_text or "0")
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    return sign + _layout(digits, point)


def _layout(digits: str, point: int) -> str:
    """ECMAScript Number::toString steps 6-10 for digits ``s`` (k digits) and exponent ``n``."""
    k = len(digits)
    if k <= point <= 21:
        return digits + "0" * (point - k)
    if 0 < point <= 21:
        return digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return "0." + "0" * (-point) + digits
    exponent = point - 1
    exp_text = f"e+{exponent}" if exponent >= 0 else f"e-{-exponent}"
    if k == 1:
        return digits + exp_text
    return digits[0] + "." + digits[1:] + exp_text


def _json_number(x: int | float) -> str:
    text = js_number(x)
    # JSON.stringify writes non-finite numbers as null.
    return "null" if text in ("NaN", "Infinity", "-Infinity") else text


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _quote(text: str) -> str:
    """A JSON string literal as ``JSON.stringify`` writes it (raw UTF-8 except escapes)."""
    quoted = _encode_basestring(text)
    if text.isascii():
        return quoted
    # A Python str holds code points, so any surrogate in it is unpaired for UTF-8; the
    # well-formed JSON.stringify of ES2019 escapes those in lowercase hex.
    return _SURROGATE.sub(_escape_surrogate, quoted)


def _key_text(key: object) -> str:
    if isinstance(key, str):
        return key
    raise TypeError(f"JSON object keys must be str, got {type(key).__name__}: {key!r}")


class _Raw(str):
    """Already-encoded output text waiting on the work stack (as opposed to a str value)."""

    __slots__ = ()


_CLOSE_OBJECT: Final = _Raw("}")
_CLOSE_ARRAY: Final = _Raw("]")


def _encode(value: object, *, sort_keys: bool) -> str:
    # Iterative, with an explicit work stack, so that deep nesting cannot exhaust the Python
    # stack; a depth limit turns circular values into an error instead of endless output.
    parts: list[str] = []
    emit = parts.append
    stack: list[object] = [value]
    push = stack.append
    pop = stack.pop
    depth = 0
    while stack:
        item = pop()
        if type(item) is _Raw:
            emit(item)
            if item is _CLOSE_OBJECT or item is _CLOSE_ARRAY:
                depth -= 1
        elif isinstance(item, str):
            emit(_quote(item))
        elif item is None:
            emit("null")
        elif item is True:
            emit("true")
        elif item is False:
            emit("false")
        elif isinstance(item, int | float):
            emit(_json_number(item))
        elif isinstance(item, Mapping):
            pairs = [(_key_text(k), v) for k, v in item.items()]
            if not pairs:
                emit("{}")
                continue
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"JSON value nested deeper than {MAX_DEPTH} levels (or circular)")
            if sort_keys:
                pairs.sort(key=lambda pair: utf16_key(pair[0]))
            emit("{")
            push(_CLOSE_OBJECT)
            for index in range(len(pairs) - 1, -1, -1):
                key, member = pairs[index]
                push(member)
                push(_Raw(("," if index else "") + _quote(key) + ":"))
        elif isinstance(item, list | tuple):
            if not item:
                emit("[]")
                continue
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"JSON value nested deeper than {MAX_DEPTH} levels (or circular)")
            emit("[")
            push(_CLOSE_ARRAY)
            for index in range(len(item) - 1, 0, -1):
                push(item[index])
                push(_Raw(","))
            push(item[0])
        else:
            raise TypeError(f"value of type {type(item).__name__} is not JSON serializable")
    return "".join(parts)


def canonical_json(value: object) -> str:
    """The reference's ``canonicalize`` (spec 3.2): sorted keys, no whitespace, JS numbers.

    Object keys are ordered by UTF-16 code units, as JS ``Array.prototype.sort`` orders them.
    ``None`` (and so JS ``undefined``) is ``null``; NaN and infinities are ``null``.

    Args:
        value: A JSON value built from dict/Mapping (str keys), list/tuple, str, int, float,
            bool and None.

    Returns:
        The canonical text; hash its UTF-8 encoding.

    Raises:
        TypeError: For a value or key of an unsupported type.
        ValueError: For nesting deeper than ``MAX_DEPTH`` (for example a circular value).
    """
    # Fast path: the C encoder, when its output is certainly the same (the values as for
    # json_stringify, every key a str, no character from U+D800 up in the text).
    if (type(value) is dict or type(value) is list) and _fast_path_is_exact(value, str_keys=True):
        try:
            text = _sorted_encoder.encode(value)
        except (TypeError, ValueError, RecursionError):
            pass  # the exact encoder reports it, or copes (deep nesting)
        else:
            if text.isascii() or _HIGH_CHARACTER.search(text) is None:
                return text
    return _encode(value, sort_keys=True)


def json_stringify(value: object) -> str:
    """``JSON.stringify(value)`` of the reference: insertion key order, no whitespace.

    Same number and string rules as ``canonical_json``.  Uses the C ``json`` encoder when its
    output cannot differ from JS's, and the exact encoder otherwise.  Keys must be ``str``
    (the fast path would coerce other keys as ``json.dumps`` does; the exact one rejects
    them).  Unlike a JS engine, we keep integer-like keys such as ``"2"`` in insertion order;
    JS would list them first, which changes bytes but not meaning.

    Args:
        value: A JSON value (see ``canonical_json``).

    Returns:
        The JSON text, byte-identical to what the reference would send.

    Raises:
        TypeError: For a value or key of an unsupported type.
        ValueError: For nesting deeper than ``MAX_DEPTH`` (for example a circular value).
    """
    if (type(value) is dict or type(value) is list) and _fast_path_is_exact(value):
        try:
            text = _insertion_order_encoder.encode(value)
        except (TypeError, ValueError, RecursionError):
            pass  # the exact encoder reports it, or copes (deep nesting)
        else:
            if text.isascii() or _is_encodable(text):
                return text
    return _encode(value, sort_keys=False)


# json.dumps(value, ensure_ascii=False, separators=(",", ":")) builds this encoder anew on
# every call; the text is the same.
_compact_encoder: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def json_stringify_checked(value: dict[str, Any]) -> str:
    """``json_stringify(value)`` for a dict whose members the caller has already checked
    as its fast path does (``fast_path_is_exact`` on every part, or an equivalent check of
    exact types and safe numbers): the C encoder's text without walking the value again.

    Raises:
        TypeError, ValueError: As ``json_stringify``.
    """
    try:
        text = _compact_encoder.encode(value)
    except (TypeError, ValueError, RecursionError):
        return _encode(value, sort_keys=False)  # reports it, or copes (deep nesting)
    if text.isascii() or _is_encodable(text):
        return text
    return _encode(value, sort_keys=False)


def fast_path_is_exact(value: dict[Any, Any] | list[Any]) -> bool:
    """Whether ``json.dumps`` writes every member of ``value`` exactly as JS's
    ``JSON.stringify`` would (the check ``json_stringify`` makes before its fast path; keys
    are not checked)."""
    return _fast_path_is_exact(value)


def _fast_path_is_exact(value: dict[Any, Any] | list[Any], *, str_keys: bool = False) -> bool:
    """Whether ``json.dumps`` formats every member of ``value`` exactly as JS would.

    Python differs from JS on integral floats (``5.0``), exponents (``1e-07``, ``1e+16``),
    -0.0, NaN/Infinity and integers beyond 2**53; every other float is written alike.  Any
    type other than dict, list, str, int, float, bool and None (tuples, other mappings,
    str subclasses) also goes to the exact encoder.  Keys are checked only with
    ``str_keys`` (json.dumps would coerce an int key where the exact encoder refuses it).
    """
    stack: list[Any] = [value]
    pop = stack.pop
    push = stack.append
    budget = _FAST_PATH_MAX_CONTAINERS  # a circular value would loop here for ever
    while stack:
        budget -= 1
        if budget < 0:
            return False
        container = pop()
        if str_keys and type(container) is dict:
            for key in container:
                if type(key) is not str:
                    return False
        for member in container.values() if type(container) is dict else container:
            kind = type(member)
            if kind is str or kind is bool or member is None:
                continue
            if kind is dict or kind is list:
                push(member)
                continue
            if kind is int:
                if -_MAX_EXACT_INT <= member <= _MAX_EXACT_INT:
                    continue
                return False
            if kind is float and 1e-4 <= abs(member) < 1e16 and not member.is_integer():
                continue
            return False
    return True


def _is_encodable(text: str) -> bool:
    # Lone surrogates are the only str content UTF-8 cannot encode; this is much faster
    # than searching for them.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
