"""Queries: one validated ``QuerySpec``, run in SQL by SQLite and in Python by memory.

Both stores must return the same rows in the same order, so the Python side imitates what
SQLite does with ``json_extract``:

* a field's value is compared as SQLite sees it: ``true``/``false`` are 1/0, objects and
  arrays are their JSON text, a missing field or ``null`` is NULL;
* ``==``/``!=`` are NULL-safe (``IS``/``IS NOT``): ``("x", "==", None)`` finds records
  without ``x``, and ``("x", "!=", 1)`` includes them;
* ``<``, ``<=``, ``>``, ``>=`` and ``in`` never match NULL;
* values of different kinds order as numbers < text; NULL sorts first ascending, last
  descending; ties are broken by record id, ascending.

The field name ``id`` means the record id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from kora.core.errors import ValidationError
from kora.core.json_types import JsonValue
from kora.store.values import Order, Where

__all__ = ["QuerySpec", "check_field", "field_expression", "query_spec"]

_OPERATORS: Final = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})
_SQL_OPERATOR: Final = {"==": "IS", "!=": "IS NOT", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
#: The special field name for the record id.
ID_FIELD: Final = "id"

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


@attrs.frozen
class QuerySpec:
    collection: str
    where: tuple[Where, ...]
    order_by: tuple[Order, ...]
    limit: int | None
    offset: int
    include_deleted: bool

    def index_fields(self) -> tuple[str, ...]:
        """The fields an index should cover: equality fields, then ordering or range fields."""
        equal = sorted({f for f, op, _ in self.where if op in ("==", "in") and f != ID_FIELD})
        rest = [f for f, _ in self.order_by] or [
            f for f, op, _ in self.where if op not in ("==", "in", "!=")
        ]
        fields = list(equal)
        for name in rest:
            if name != ID_FIELD and name not in fields:
                fields.append(name)
        return tuple(fields)


def check_field(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError(f"a query field must be a non-empty string, got {name!r}")
    if any(ch in name for ch in '"\\') or any(ord(ch) < 0x20 for ch in name):
        raise ValidationError(f"unsupported character in query field name {name!r}")
    return name


def query_spec(
    collection: str,
    where: Sequence[Where] | None,
    order_by: Sequence[Order] | None,
    limit: int | None,
    offset: int,
    include_deleted: bool,
) -> QuerySpec:
    """Validate query arguments.

    Raises:
        ValidationError: On an unknown operator, a bad field name, an ``in`` without a list,
            a negative limit or offset, or a value that is not JSON.
    """
    conditions: list[Where] = []
    for condition in where or ():
        if len(condition) != 3:
            raise ValidationError(f"a where condition is (field, operator, value): {condition!r}")
        name, op, value = condition
        check_field(name)
        if op not in _OPERATORS:
            raise ValidationError(f"unknown query operator {op!r}")
        if op == "in" and not isinstance(value, list | tuple):
            raise ValidationError(f"'in' needs a list of values, got {value!r}")
        try:
            _dumps(value)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"query value is not JSON: {value!r}") from exc
        conditions.append((name, op, list(value) if op == "in" else value))  # type: ignore[arg-type]
    orders: list[Order] = []
    for order in order_by or ():
        name, descending = order
        orders.append((check_field(name), bool(descending)))
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValidationError(f"limit must be a non-negative int, got {limit!r}")
    if type(offset) is not int or offset < 0:
        raise ValidationError(f"offset must be a non-negative int, got {offset!r}")
    return QuerySpec(collection, tuple(conditions), tuple(orders), limit, offset, include_deleted)


# ---------------------------------------------------------------------------------- SQL


def field_expression(name: str) -> str:
    """The SQL expression of a field; indexes and queries must spell it identically."""
    if name == ID_FIELD:
        return "id"
    return f"json_extract(data, '$.\"{name.replace(chr(39), chr(39) * 2)}\"')"


def sql_parameter(value: JsonValue) -> Any:
    """A query value bound as SQLite sees the stored JSON value."""
    if isinstance(value, dict | list):
        return _dumps(value)
    return value


def where_sql(spec: QuerySpec) -> tuple[str, list[Any]]:
    clauses = ["collection = ?"]
    params: list[Any] = [spec.collection]
    if not spec.include_deleted:
        clauses.append("deleted = 0")
    for name, op, value in spec.where:
        expr = field_expression(name)
        if op == "in":
            values = value if isinstance(value, list) else []
            clauses.append(f"{expr} IN ({', '.join('?' * len(values))})")
            params.extend(sql_parameter(v) for v in values)
        else:
            clauses.append(f"{expr} {_SQL_OPERATOR[op]} ?")
            params.append(sql_parameter(value))
    return " AND ".join(clauses), params


def order_sql(spec: QuerySpec) -> str:
    keys = [f"{field_expression(name)} {'DESC' if desc else 'ASC'}" for name, desc in spec.order_by]
    keys.append("id ASC")
    return ", ".join(keys)


# ------------------------------------------------------------------------------- Python


def sql_value(value: JsonValue) -> Any:
    """What ``json_extract`` returns for a stored JSON value."""
    if value is True:
        return 1
    if value is False:
        return 0
    if isinstance(value, dict | list):
        return _dumps(value)
    return value


def _rank(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int | float):
        return 1
    return 2


def sort_key(value: Any) -> tuple[int, Any]:
    """SQLite's order of values returned by ``sql_value`` (NULL < numbers < text)."""
    rank = _rank(value)
    return (rank, 0 if rank == 0 else value)


def _field(record_id: str, fields: Mapping[str, JsonValue], name: str) -> Any:
    if name == ID_FIELD:
        return record_id
    return sql_value(fields.get(name))


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "==":
        return _rank(left) == _rank(right) and left == right
    if op == "!=":
        return not (_rank(left) == _rank(right) and left == right)
    if left is None or right is None:
        return False
    a, b = sort_key(left), sort_key(right)
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def matches(spec: QuerySpec, record_id: str, fields: Mapping[str, JsonValue]) -> bool:
    for name, op, value in spec.where:
        actual = _field(record_id, fields, name)
        if op == "in":
            values = value if isinstance(value, list) else []
            if actual is None or not any(
                _compare(actual, "==", sql_value(v)) for v in values if v is not None
            ):
                return False
        elif not _compare(actual, op, sql_value(value)):
            return False
    return True


def sort_rows(
    spec: QuerySpec, rows: list[tuple[str, Mapping[str, JsonValue]]]
) -> list[tuple[str, Mapping[str, JsonValue]]]:
    """Sort ``(record_id, fields)`` rows as ``ORDER BY ..., id`` would."""
    ordered = sorted(rows, key=lambda row: row[0])
    for name, descending in reversed(spec.order_by):
        ordered.sort(key=lambda row: sort_key(_field(row[0], row[1], name)), reverse=descending)
    return ordered


def window(spec: QuerySpec, rows: list[Any]) -> list[Any]:
    end = None if spec.limit is None else spec.offset + spec.limit
    return rows[spec.offset : end]
