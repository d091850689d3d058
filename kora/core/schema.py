"""Schemas: the collections of an app, their fields, and validation of record data.

A schema is plain data, frozen once defined::

    schema = define_schema(
        version=1,
        collections={
            "todos": {"title": string(), "done": boolean(default=False), "due": timestamp(optional=True)},
        },
    )
    schema.validate_insert("todos", {"title": "Ship it"})  # {"title": "Ship it", "done": False}

Field rules:

* a field with a ``default`` is not required; a missing one gets a copy of the default;
* ``optional=True`` means the field may be absent or ``None``;
* otherwise a field is required on insert; ``required=False`` makes it omissible without
  allowing ``None``.

Binary values travel as ``{"$koraBytes": "<standard base64>"}``, the reference's canonical
form, which is created before hashing; ``bytes`` given to a ``bytes_()`` field are converted.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import enum as _enum
import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs

from kora.core.errors import SchemaValidationError, ValidationError
from kora.core.json_types import JsonObject, JsonValue, copy_json_value
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType

__all__ = [
    "BYTES_TAG",
    "Collection",
    "Field",
    "FieldKind",
    "Schema",
    "array",
    "binary",
    "boolean",
    "bytes_",
    "decode_bytes_value",
    "define_schema",
    "encode_bytes_value",
    "enum",
    "integer",
    "is_bytes_value",
    "json",
    "number",
    "string",
    "timestamp",
]

#: The single key of the tagged binary form ``{"$koraBytes": "<base64>"}``.
BYTES_TAG: Final = "$koraBytes"

#: The record id is not a data field; a schema cannot define it.
RESERVED_FIELDS: Final = frozenset({"id"})


class FieldKind(_enum.StrEnum):
    STRING = "string"
    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    JSON = "json"
    ARRAY = "array"
    ENUM = "enum"
    TIMESTAMP = "timestamp"
    BYTES = "bytes"


class _NoDefault(_enum.Enum):
    NO_DEFAULT = "NO_DEFAULT"


NO_DEFAULT: Final = _NoDefault.NO_DEFAULT


# -------------------------------------------------------------------------------- bytes


def encode_bytes_value(data: bytes | bytearray | memoryview) -> dict[str, str]:
    """``{"$koraBytes": "<standard base64 with padding>"}`` for raw bytes."""
    return {BYTES_TAG: base64.b64encode(bytes(data)).decode("ascii")}


def is_bytes_value(value: object) -> bool:
    """Whether ``value`` is the tagged binary form (exactly one key, a string)."""
    return isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get(BYTES_TAG), str)


def decode_bytes_value(value: object) -> bytes:
    """The bytes of a tagged binary value (raw ``bytes`` pass through).

    Raises:
        ValidationError: If ``value`` is neither bytes nor a valid tagged value.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if not is_bytes_value(value):
        raise ValidationError(f"not a tagged binary value {{'$koraBytes': str}}: {value!r}")
    assert isinstance(value, Mapping)
    try:
        return base64.b64decode(value[BYTES_TAG], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"invalid base64 in $koraBytes: {value[BYTES_TAG]!r}") from None


# -------------------------------------------------------------------------------- fields


def _describe(value: object) -> str:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{type(value).__name__} {shown}"


class _Mismatch(Exception):
    """A value does not fit a field; carries what was expected (internal)."""

    def __init__(self, expected: str, value: object, where: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value
        self.where = where


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@attrs.frozen
class Field:
    """One field of a collection.  Build it with ``string()``, ``number()`` and friends.

    Attributes:
        kind: What values the field holds.
        optional: The field may be absent or None.
        default: Filled in on insert when the field is missing (``NO_DEFAULT`` if none).
        required: Explicit override of "must be present on insert"; None means "not
            optional and no default".
        items: For arrays, the field every element must match (None: any JSON value).
        values: For enums, the allowed strings.
    """

    kind: FieldKind
    optional: bool = False
    default: Any = NO_DEFAULT
    required: bool | None = None
    items: Field | None = None
    values: tuple[str, ...] = ()

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT

    @property
    def is_required(self) -> bool:
        """Must the field be present on insert?"""
        if self.required is not None:
            return self.required
        return not self.optional and not self.has_default

    def default_value(self) -> JsonValue:
        """A fresh copy of the default (so records never share a mutable default)."""
        if not self.has_default:
            raise LookupError("field has no default")
        return copy_json_value(self.default)

    def describe(self) -> str:
        """The expected value in words, for error messages."""
        if self.kind is FieldKind.ENUM:
            return "one of " + ", ".join(repr(v) for v in self.values)
        if self.kind is FieldKind.ARRAY and self.items is not None:
            return f"an array of {self.items.describe()}"
        return {
            FieldKind.STRING: "a string",
            FieldKind.NUMBER: "a finite number",
            FieldKind.INTEGER: "an integer",
            FieldKind.BOOLEAN: "a boolean",
            FieldKind.JSON: "a JSON value",
            FieldKind.ARRAY: "an array",
            FieldKind.TIMESTAMP: "a timestamp (ms since the epoch, or an aware datetime)",
            FieldKind.BYTES: "bytes (or {'$koraBytes': <base64>})",
        }[self.kind]

    def convert(self, value: object) -> JsonValue:
        """Check ``value`` against the field; return the JSON value to store.

        Converts where the meaning is unambiguous: ``bytes`` to the tagged form, aware
        datetimes to integer ms, integral floats to ints for ``integer()`` fields.

        Raises:
            _Mismatch: Internally; ``Schema`` turns it into ``SchemaValidationError``.
        """
        if value is None:
            if self.optional:
                return None
            raise _Mismatch(self.describe(), value)
        kind = self.kind
        if kind is FieldKind.STRING:
            if isinstance(value, str):
                return value
        elif kind is FieldKind.NUMBER:
            if _is_number(value) and math.isfinite(value):  # type: ignore[arg-type]
                return value  # type: ignore[return-value]
        elif kind is FieldKind.INTEGER:
            if isinstance(value, int) and not isinstance(value, bool):
                return int(value)
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif kind is FieldKind.BOOLEAN:
            if isinstance(value, bool):
                return value
        elif kind is FieldKind.TIMESTAMP:
            if isinstance(value, _dt.datetime):
                if value.tzinfo is None:
                    raise _Mismatch(self.describe() + "; a naive datetime is ambiguous", value)
                return int(value.timestamp() * 1000)
            if _is_number(value) and math.isfinite(value):  # type: ignore[arg-type]
                return value  # type: ignore[return-value]
        elif kind is FieldKind.ENUM:
            if isinstance(value, str) and value in self.values:
                return value
        elif kind is FieldKind.BYTES:
            if isinstance(value, bytes | bytearray | memoryview):
                return encode_bytes_value(value)  # type: ignore[return-value]
            if is_bytes_value(value):
                try:
                    decode_bytes_value(value)
                except ValidationError:
                    raise _Mismatch("valid standard base64 in $koraBytes", value) from None
                return {BYTES_TAG: value[BYTES_TAG]}  # type: ignore[index]
        elif kind is FieldKind.JSON:
            try:
                return copy_json_value(value)
            except ValidationError as exc:
                raise _Mismatch(f"a JSON value ({exc})", value) from None
        elif kind is FieldKind.ARRAY and isinstance(value, list | tuple):
            return self._convert_items(value)
        raise _Mismatch(self.describe(), value)

    def _convert_items(self, items: list[Any] | tuple[Any, ...]) -> list[JsonValue]:
        if self.items is None:
            try:
                return [copy_json_value(item) for item in items]
            except ValidationError as exc:
                raise _Mismatch(f"an array of JSON values ({exc})", items) from None
        converted = []
        for index, item in enumerate(items):
            try:
                converted.append(self.items.convert(item))
            except _Mismatch as exc:
                raise _Mismatch(exc.expected, exc.value, f"[{index}]{exc.where}") from None
        return converted

    def to_json(self) -> JsonObject:
        """A JSON description of the field (for persistence and comparison)."""
        out: JsonObject = {"type": self.kind.value}
        if self.optional:
            out["optional"] = True
        if self.has_default:
            out["default"] = copy_json_value(self.default)
        if self.required is not None:
            out["required"] = self.required
        if self.items is not None:
            out["items"] = self.items.to_json()
        if self.kind is FieldKind.ENUM:
            out["values"] = list(self.values)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Field:
        """Inverse of ``to_json``.

        Raises:
            ValidationError: If the description is malformed.
        """
        try:
            kind = FieldKind(data["type"])
        except (KeyError, ValueError, TypeError):
            raise ValidationError(f"not a field description: {data!r}") from None
        items = data.get("items")
        return _field(
            kind,
            optional=bool(data.get("optional", False)),
            default=data.get("default", NO_DEFAULT),
            required=data.get("required"),
            items=None if items is None else cls.from_json(items),
            values=data.get("values", ()),
        )


def _field(
    kind: FieldKind,
    *,
    optional: bool = False,
    default: Any = NO_DEFAULT,
    required: bool | None = None,
    items: Field | None = None,
    values: Iterable[str] = (),
) -> Field:
    if required is not None and not isinstance(required, bool):
        raise ValidationError(f"required must be True, False or None, got {required!r}")
    if required and (optional or default is not NO_DEFAULT):
        raise ValidationError("a required field cannot also be optional or have a default")
    if items is not None and not isinstance(items, Field):
        raise ValidationError(f"array items must be a Field (e.g. string()), got {items!r}")
    field = Field(
        kind=kind,
        optional=bool(optional),
        required=required,
        items=items,
        values=tuple(values),
    )
    if kind is FieldKind.ENUM:
        if not field.values or not all(isinstance(v, str) for v in field.values):
            raise ValidationError(f"enum() needs a non-empty list of strings, got {values!r}")
        if len(set(field.values)) != len(field.values):
            raise ValidationError(f"enum() values repeat: {values!r}")
    if default is not NO_DEFAULT:
        try:
            converted = field.convert(default)
        except _Mismatch as exc:
            raise ValidationError(
                f"default {_describe(default)} does not fit the field: expected {exc.expected}"
            ) from None
        field = attrs.evolve(field, default=converted)
    return field


def string(
    *, optional: bool = False, default: Any = NO_DEFAULT, required: bool | None = None
) -> Field:
    """A text field."""
    return _field(FieldKind.STRING, optional=optional, default=default, required=required)


def number(
    *, optional: bool = False, default: Any = NO_DEFAULT, required: bool | None = None
) -> Field:
    """A finite number (int or float; JS has only doubles)."""
    return _field(FieldKind.NUMBER, optional=optional, default=default, required=required)


def integer(
    *, optional: bool = False, default: Any = NO_DEFAULT, required: bool | None = None
) -> Field:
    """A whole number (an integral float such as ``3.0`` is stored as ``3``)."""
    return _field(FieldKind.INTEGER, optional=optional, default=default, required=required)


def boolean(
    *, optional: bool = False, default: Any = NO_DEFAULT, required: bool | None = None
) -> Field:
    """``True`` or ``False``."""
    return _field(FieldKind.BOOLEAN, optional=optional, default=default, required=required)


def json(
    *, optional: bool = False, default: Any = NO_DEFAULT, required: bool | None = None
) -> Field:
    """Any JSON value (object, array, string, number, boolean, null when optional)."""
    return _field(FieldKind.JSON, optional=optional, default=default, required=required)


def array(
    items: Field | None = None,
    *,
    optional: bool = False,
    default: Any = NO_DEFAULT,
    required: bool | None = None,
) -> Field:
    """A list; with ``items``, every element must match that field (e.g. ``array(string())``)."""
    return _field(
        FieldKind.ARRAY, optional=optional, default=default, required=required, items=items
    )


def enum(
    values: Iterable[str],
    *,
    optional: bool = False,
    default: Any = NO_DEFAULT,
    required: bool | None = None,
) -> Field:
    """One string out of ``values``."""
    if isinstance(values, str):
        raise ValidationError("enum() takes a list of strings, not one string")
    return _field(
        FieldKind.ENUM, optional=optional, default=default, required=required, values=values
    )


def timestamp(
    *, optional: bool = False, default: Any = NO_DEFAULT, required: bool | None = None
) -> Field:
    """A point in time as ms since the epoch (aware ``datetime`` values are converted)."""
    return _field(FieldKind.TIMESTAMP, optional=optional, default=default, required=required)


def bytes_(
    *, optional: bool = False, default: Any = NO_DEFAULT, required: bool | None = None
) -> Field:
    """Binary data, stored and synced as ``{"$koraBytes": "<base64>"}``."""
    return _field(FieldKind.BYTES, optional=optional, default=default, required=required)


binary = bytes_


# ---------------------------------------------------------------------------- collections


def _frozen_fields(fields: Mapping[str, Field]) -> Mapping[str, Field]:
    return MappingProxyType(dict(fields))


def _frozen_collections(collections: Mapping[str, Collection]) -> Mapping[str, Collection]:
    return MappingProxyType(dict(collections))


@attrs.frozen
class Collection:
    """A named collection and its fields (in definition order)."""

    name: str
    fields: Mapping[str, Field] = attrs.field(converter=_frozen_fields)

    def to_json(self) -> JsonObject:
        return {name: field.to_json() for name, field in self.fields.items()}


def _error(
    collection: str, field: str, expected: str, given: object, where: str = ""
) -> SchemaValidationError:
    return SchemaValidationError(
        f'Field "{field}{where}" in collection "{collection}" must be {expected}, '
        f"got {_describe(given)}",
        collection=collection,
        field=field,
        expected=expected,
        given=_describe(given),
    )


_ATOMIC_KINDS: Final = {
    AtomicOpType.INCREMENT: (FieldKind.NUMBER, FieldKind.INTEGER),
    AtomicOpType.MAX: (FieldKind.NUMBER, FieldKind.INTEGER, FieldKind.TIMESTAMP),
    AtomicOpType.MIN: (FieldKind.NUMBER, FieldKind.INTEGER, FieldKind.TIMESTAMP),
    AtomicOpType.APPEND: (FieldKind.ARRAY, FieldKind.JSON),
    AtomicOpType.REMOVE: (FieldKind.ARRAY, FieldKind.JSON),
}


@attrs.frozen
class Schema:
    """A versioned set of collections.  Build it with ``define_schema``."""

    version: int
    collections: Mapping[str, Collection] = attrs.field(converter=_frozen_collections)

    def collection(self, name: str) -> Collection:
        """The collection called ``name``.

        Raises:
            SchemaValidationError: If there is none.
        """
        try:
            return self.collections[name]
        except (KeyError, TypeError):
            available = ", ".join(self.collections) or "(none)"
            raise SchemaValidationError(
                f'Unknown collection "{name}". Available collections: {available}',
                collection=str(name),
                expected="one of " + available,
                given=_describe(name),
            ) from None

    def _check_known(self, collection: Collection, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping):
            raise SchemaValidationError(
                f'Data for collection "{collection.name}" must be a mapping of fields, '
                f"got {_describe(data)}",
                collection=collection.name,
                expected="a mapping",
                given=_describe(data),
            )
        for key in data:
            if key not in collection.fields:
                available = ", ".join(collection.fields)
                raise SchemaValidationError(
                    f'Unknown field "{key}" in collection "{collection.name}". '
                    f"Available fields: {available}",
                    collection=collection.name,
                    field=str(key),
                    expected="one of " + available,
                    given=_describe(key),
                )

    def _convert(self, collection: Collection, name: str, field: Field, value: object) -> JsonValue:
        try:
            return field.convert(value)
        except _Mismatch as exc:
            raise _error(collection.name, name, exc.expected, exc.value, exc.where) from None

    def validate_insert(self, collection: str, data: Mapping[str, Any]) -> dict[str, JsonValue]:
        """The data of a new record: checked, converted, defaults filled in.

        Returns:
            A new dict in the schema's field order; optional fields without a value or
            default are left out.

        Raises:
            SchemaValidationError: Unknown collection or field, a missing required field, or
                a value of the wrong kind (the message names collection, field, what was
                expected and what was given).
        """
        coll = self.collection(collection)
        self._check_known(coll, data)
        result: dict[str, JsonValue] = {}
        for name, field in coll.fields.items():
            if name in data:
                result[name] = self._convert(coll, name, field, data[name])
            elif field.has_default:
                result[name] = field.default_value()
            elif field.is_required:
                raise SchemaValidationError(
                    f'Required field "{name}" is missing in collection "{coll.name}" '
                    f"(expected {field.describe()})",
                    collection=coll.name,
                    field=name,
                    expected=field.describe(),
                    given=None,
                )
        return result

    def validate_update(
        self, collection: str, changes: Mapping[str, Any]
    ) -> dict[str, JsonValue | AtomicOp]:
        """The changed fields of an update: checked and converted.

        ``AtomicOp`` values pass through unchanged once they fit the field (increment on
        numbers, max/min on numbers and timestamps, append/remove on arrays and JSON).

        Returns:
            A new dict in the schema's field order.

        Raises:
            SchemaValidationError: Unknown collection or field, or a value of the wrong kind
                (``None`` only for optional fields).
        """
        coll = self.collection(collection)
        self._check_known(coll, changes)
        result: dict[str, JsonValue | AtomicOp] = {}
        for name, field in coll.fields.items():
            if name not in changes:
                continue
            value = changes[name]
            if isinstance(value, AtomicOp):
                result[name] = self._check_atomic(coll, name, field, value)
            else:
                result[name] = self._convert(coll, name, field, value)
        return result

    def _check_atomic(self, coll: Collection, name: str, field: Field, op: AtomicOp) -> AtomicOp:
        kind = AtomicOpType(op.type)
        allowed = _ATOMIC_KINDS[kind]
        if field.kind not in allowed:
            expected = f"a field of kind {' or '.join(allowed)} for atomic {kind}"
            raise SchemaValidationError(
                f'Atomic {kind} cannot apply to field "{name}" in collection "{coll.name}", '
                f"which is {field.kind}",
                collection=coll.name,
                field=name,
                expected=expected,
                given=f"{field.kind} field",
            )
        if kind in (AtomicOpType.INCREMENT, AtomicOpType.MAX, AtomicOpType.MIN):
            if not _is_number(op.value) or not math.isfinite(op.value):  # type: ignore[arg-type]
                raise _error(coll.name, name, f"a finite number for atomic {kind}", op.value)
            if field.kind is FieldKind.INTEGER and not float(op.value).is_integer():  # type: ignore[arg-type]
                raise _error(coll.name, name, f"an integer for atomic {kind}", op.value)
        elif field.kind is FieldKind.ARRAY and field.items is not None:
            try:
                item = field.items.convert(op.value)
            except _Mismatch as exc:
                raise _error(coll.name, name, f"items of {exc.expected}", exc.value, "[]") from None
            return AtomicOp(kind, item)
        else:
            try:
                return AtomicOp(kind, copy_json_value(op.value))
            except ValidationError as exc:
                raise _error(coll.name, name, f"a JSON value ({exc})", op.value) from None
        return op

    def validate_operation(self, op: Operation) -> None:
        """Check an operation from a peer against this schema (the server's ingest check).

        Inserts must carry a complete record, updates only known fields with values (or
        atomic ops) of the right kind, and deletes must name a known collection.

        Raises:
            SchemaValidationError: As ``validate_insert`` / ``validate_update`` describe.
        """
        if op.type is OpType.INSERT:
            self.validate_insert(op.collection, op.data or {})
        elif op.type is OpType.UPDATE:
            changes: dict[str, Any] = dict(op.data or {})
            for name, atomic in (op.atomic_ops or {}).items():
                changes[name] = atomic
            self.validate_update(op.collection, changes)
        else:
            self.collection(op.collection)

    def to_json(self) -> JsonObject:
        """``{"version": n, "collections": {name: {field: description}}}``."""
        return {
            "version": self.version,
            "collections": {name: c.to_json() for name, c in self.collections.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schema:
        """Inverse of ``to_json``.

        Raises:
            ValidationError: If the description is malformed.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("collections"), Mapping):
            raise ValidationError(f"not a schema description: {data!r}")
        return define_schema(
            version=data.get("version"),  # type: ignore[arg-type]
            collections={
                name: {fname: Field.from_json(f) for fname, f in fields.items()}
                for name, fields in data["collections"].items()
            },
        )


def define_schema(
    *, version: int = 1, collections: Mapping[str, Mapping[str, Field] | Collection]
) -> Schema:
    """Define an app's schema.

    Args:
        version: The schema version (an integer >= 1) sent in the handshake and stamped on
            every operation.
        collections: ``{collection name: {field name: field}}``.

    Returns:
        A frozen ``Schema``.

    Raises:
        ValidationError: For a bad version, name or field (the field ``id`` is reserved for
            the record id).
    """
    if type(version) is not int or version < 1:
        raise ValidationError(f"schema version must be an integer >= 1, got {version!r}")
    if not isinstance(collections, Mapping):
        raise ValidationError("collections must be a mapping of name -> fields")
    built: dict[str, Collection] = {}
    for name, fields in collections.items():
        if not isinstance(name, str) or not name:
            raise ValidationError(f"collection names must be non-empty strings, got {name!r}")
        if isinstance(fields, Collection):
            fields = fields.fields
        if not isinstance(fields, Mapping):
            raise ValidationError(f'collection "{name}" must map field names to fields')
        for field_name, field in fields.items():
            if not isinstance(field_name, str) or not field_name:
                raise ValidationError(
                    f'field names in collection "{name}" must be non-empty strings, '
                    f"got {field_name!r}"
                )
            if field_name in RESERVED_FIELDS:
                raise ValidationError(
                    f'field "{field_name}" in collection "{name}" is reserved for the record id'
                )
            if not isinstance(field, Field):
                raise ValidationError(
                    f'field "{field_name}" in collection "{name}" must be a Field such as '
                    f"string(), got {field!r}"
                )
        built[name] = Collection(name, fields)
    return Schema(version=version, collections=built)
