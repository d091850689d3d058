"""Schemas: definition, validation, bytes, persistence."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kora.core import (
    AtomicOp,
    AtomicOpType,
    Field,
    FieldKind,
    Schema,
    SchemaValidationError,
    ValidationError,
    array,
    binary,
    boolean,
    bytes_,
    decode_bytes_value,
    define_schema,
    encode_bytes_value,
    enum,
    integer,
    is_bytes_value,
    json,
    number,
    string,
    timestamp,
)


@pytest.fixture
def schema() -> Schema:
    return define_schema(
        version=2,
        collections={
            "todos": {
                "title": string(),
                "done": boolean(default=False),
                "priority": enum(["low", "high"], default="low"),
                "count": integer(optional=True),
                "score": number(required=False),
                "tags": array(string(), default=[]),
                "meta": json(optional=True),
                "due": timestamp(optional=True),
                "blob": bytes_(optional=True),
            },
            "notes": {"body": string()},
        },
    )


def test_insert_applies_defaults_in_field_order(schema: Schema) -> None:
    result = schema.validate_insert("todos", {"title": "Ship it", "count": 3})
    assert result == {"title": "Ship it", "done": False, "priority": "low", "count": 3, "tags": []}
    assert list(result) == ["title", "done", "priority", "count", "tags"]


def test_defaults_are_fresh_copies(schema: Schema) -> None:
    first = schema.validate_insert("todos", {"title": "a"})
    first["tags"].append("x")  # type: ignore[union-attr]
    assert schema.validate_insert("todos", {"title": "b"})["tags"] == []


def test_optional_fields_accept_none(schema: Schema) -> None:
    result = schema.validate_insert("todos", {"title": "a", "count": None, "meta": None})
    assert result["count"] is None
    assert result["meta"] is None


def test_conversions(schema: Schema) -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    result = schema.validate_insert(
        "todos",
        {
            "title": "a",
            "count": 4.0,
            "due": when,
            "blob": b"\x00\xffhi",
            "meta": {"nested": (1, 2)},
            "tags": ("x", "y"),
        },
    )
    assert result["count"] == 4
    assert type(result["count"]) is int
    assert result["due"] == 1704164645678
    assert result["blob"] == {"$koraBytes": "AP9oaQ=="}
    assert result["meta"] == {"nested": [1, 2]}
    assert result["tags"] == ["x", "y"]
    assert decode_bytes_value(result["blob"]) == b"\x00\xffhi"


def test_bytes_helpers() -> None:
    tagged = encode_bytes_value(bytearray(b"abc"))
    assert tagged == {"$koraBytes": "YWJj"}
    assert is_bytes_value(tagged)
    assert not is_bytes_value({"$koraBytes": "YWJj", "x": 1})
    assert not is_bytes_value({"$koraBytes": 5})
    assert decode_bytes_value(tagged) == b"abc"
    assert decode_bytes_value(b"raw") == b"raw"
    with pytest.raises(ValidationError, match="base64"):
        decode_bytes_value({"$koraBytes": "not base64!"})
    with pytest.raises(ValidationError, match="tagged"):
        decode_bytes_value("YWJj")
    assert binary is bytes_


@pytest.mark.parametrize(
    ("data", "field", "expected", "given"),
    [
        ({"title": 5}, "title", "a string", "int 5"),
        ({"title": None}, "title", "a string", "NoneType None"),
        ({"title": "a", "done": "yes"}, "done", "a boolean", "str 'yes'"),
        ({"title": "a", "done": 1}, "done", "a boolean", "int 1"),
        ({"title": "a", "count": True}, "count", "an integer", "bool True"),
        ({"title": "a", "count": 1.5}, "count", "an integer", "float 1.5"),
        ({"title": "a", "score": float("nan")}, "score", "a finite number", "float nan"),
        ({"title": "a", "score": None}, "score", "a finite number", "NoneType None"),
        ({"title": "a", "priority": "mid"}, "priority", "one of 'low', 'high'", "str 'mid'"),
        ({"title": "a", "tags": "x"}, "tags", "an array of a string", "str 'x'"),
        ({"title": "a", "tags": ["x", 2]}, "tags", "a string", "int 2"),
        ({"title": "a", "due": "2024"}, "due", "a timestamp", "str '2024'"),
        ({"title": "a", "blob": "abc"}, "blob", "bytes", "str 'abc'"),
        ({"title": "a", "blob": {"$koraBytes": "!!"}}, "blob", "valid standard base64", "dict"),
        ({"title": "a", "meta": {1: 2}}, "meta", "a JSON value", "dict"),
    ],
)
def test_insert_errors_name_collection_field_expected_and_given(
    schema: Schema, data: dict[str, Any], field: str, expected: str, given: str
) -> None:
    with pytest.raises(SchemaValidationError) as caught:
        schema.validate_insert("todos", data)
    error = caught.value
    assert error.collection == "todos"
    assert error.field == field
    assert error.expected is not None
    assert error.expected.startswith(expected)
    assert error.given is not None
    assert error.given.startswith(given)
    message = str(error)
    assert f'"{field}' in message
    assert '"todos"' in message
    assert expected in message
    assert isinstance(error, ValidationError)


def test_array_item_errors_say_which_item(schema: Schema) -> None:
    with pytest.raises(SchemaValidationError, match=r'Field "tags\[1\]" in collection "todos"'):
        schema.validate_insert("todos", {"title": "a", "tags": ["x", 2]})


def test_naive_datetime_is_refused(schema: Schema) -> None:
    with pytest.raises(SchemaValidationError, match="naive datetime"):
        schema.validate_insert("todos", {"title": "a", "due": dt.datetime(2024, 1, 1)})


def test_missing_required_field(schema: Schema) -> None:
    with pytest.raises(SchemaValidationError) as caught:
        schema.validate_insert("todos", {"done": True})
    error = caught.value
    assert (
        str(error) == 'Required field "title" is missing in collection "todos" (expected a string)'
    )
    assert (error.collection, error.field, error.expected, error.given) == (
        "todos",
        "title",
        "a string",
        None,
    )


def test_unknown_field_and_collection(schema: Schema) -> None:
    with pytest.raises(
        SchemaValidationError, match='Unknown field "colour" in collection "todos"'
    ) as caught:
        schema.validate_insert("todos", {"title": "a", "colour": "red"})
    assert caught.value.field == "colour"
    assert "Available fields: title, done" in str(caught.value)
    with pytest.raises(SchemaValidationError, match='Unknown collection "users"') as caught:
        schema.validate_update("users", {})
    assert caught.value.collection == "users"
    assert "todos, notes" in str(caught.value)
    with pytest.raises(SchemaValidationError, match="must be a mapping"):
        schema.validate_insert("todos", ["title"])  # type: ignore[arg-type]


def test_update_checks_only_given_fields(schema: Schema) -> None:
    assert schema.validate_update("todos", {"done": True, "count": None}) == {
        "done": True,
        "count": None,
    }
    assert schema.validate_update("todos", {}) == {}
    with pytest.raises(
        SchemaValidationError, match='"title" in collection "todos" must be a string'
    ):
        schema.validate_update("todos", {"title": None})
    with pytest.raises(SchemaValidationError, match="Unknown field"):
        schema.validate_update("todos", {"nope": 1})


def test_update_accepts_fitting_atomic_ops(schema: Schema) -> None:
    inc = AtomicOp(AtomicOpType.INCREMENT, 2)
    result = schema.validate_update(
        "todos",
        {
            "count": inc,
            "score": AtomicOp(AtomicOpType.MAX, 1.5),
            "tags": AtomicOp(AtomicOpType.APPEND, "x"),
            "meta": AtomicOp(AtomicOpType.REMOVE, {"a": 1}),
        },
    )
    assert result["count"] is inc
    assert result["tags"] == AtomicOp(AtomicOpType.APPEND, "x")


@pytest.mark.parametrize(
    ("field", "op", "message"),
    [
        ("title", AtomicOp(AtomicOpType.INCREMENT, 1), "cannot apply to field"),
        ("tags", AtomicOp(AtomicOpType.MAX, 1), "cannot apply to field"),
        ("count", AtomicOp(AtomicOpType.INCREMENT, "1"), "finite number"),
        ("count", AtomicOp(AtomicOpType.INCREMENT, 0.5), "an integer"),
        ("tags", AtomicOp(AtomicOpType.APPEND, 3), "items of a string"),
        ("meta", AtomicOp(AtomicOpType.APPEND, float("inf")), "a JSON value"),
    ],
)
def test_update_rejects_misfit_atomic_ops(
    schema: Schema, field: str, op: AtomicOp, message: str
) -> None:
    with pytest.raises(SchemaValidationError, match=message) as caught:
        schema.validate_update("todos", {field: op})
    assert caught.value.field == field


def test_field_semantics() -> None:
    assert string().is_required
    assert not string(optional=True).is_required
    assert not string(default="x").is_required
    assert not string(required=False).is_required
    assert string(required=True).is_required
    assert boolean(default=False).default_value() is False
    with pytest.raises(LookupError):
        string().default_value()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: string(default=5), "default int 5 does not fit"),
        (lambda: string(required=True, default="x"), "cannot also be optional"),
        (lambda: string(required=True, optional=True), "cannot also be optional"),
        (lambda: string(required="yes"), "required must be"),
        (lambda: enum([]), "non-empty list"),
        (lambda: enum("ab"), "not one string"),
        (lambda: enum(["a", "a"]), "repeat"),
        (lambda: enum(["a", 1]), "non-empty list of strings"),
        (lambda: array(items="string"), "must be a Field"),
    ],
)
def test_bad_field_definitions(make: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": 0, "collections": {}}, "version"),
        ({"version": True, "collections": {}}, "version"),
        ({"collections": {"": {}}}, "collection names"),
        ({"collections": {"t": {"id": string()}}}, "reserved for the record id"),
        ({"collections": {"t": {"": string()}}}, "field names"),
        ({"collections": {"t": {"a": str}}}, "must be a Field"),
        ({"collections": {"t": ["a"]}}, "must map field names"),
        ({"collections": [("t", {})]}, "collections must be a mapping"),
    ],
)
def test_bad_schema_definitions(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        define_schema(**kwargs)


def test_schema_is_frozen(schema: Schema) -> None:
    with pytest.raises(TypeError):
        schema.collections["x"] = None  # type: ignore[index]
    with pytest.raises(TypeError):
        schema.collection("todos").fields["x"] = string()  # type: ignore[index]
    assert schema.version == 2


def test_json_round_trip(schema: Schema) -> None:
    described = schema.to_json()
    assert described["version"] == 2
    assert described["collections"]["todos"]["priority"] == {  # type: ignore[index,call-overload]
        "type": "enum",
        "default": "low",
        "values": ["low", "high"],
    }
    assert described["collections"]["todos"]["tags"] == {  # type: ignore[index,call-overload]
        "type": "array",
        "default": [],
        "items": {"type": "string"},
    }
    again = Schema.from_json(described)
    assert again == schema
    assert again.to_json() == described
    with pytest.raises(ValidationError):
        Schema.from_json({"version": 1})
    with pytest.raises(ValidationError):
        Field.from_json({"type": "matrix"})


def test_every_kind_has_a_constructor() -> None:
    made = {
        f.kind
        for f in [
            string(),
            number(),
            integer(),
            boolean(),
            json(),
            array(),
            enum(["a"]),
            timestamp(),
            bytes_(),
        ]
    }
    assert made == set(FieldKind)


# ---------------------------------------------------------------- validate_operation (server ingest)


def _op(op_type: str, data: object, atomic: object = None) -> object:
    from kora.core import HLCTimestamp, create_operation

    return create_operation(
        node_id="n1",
        type=op_type,
        collection="todos",
        record_id="r1",
        data=data,
        previous_data=None if op_type != "update" else dict.fromkeys(data or {}),  # type: ignore[arg-type]
        timestamp=HLCTimestamp(1_700_000_000_000, 0, "n1"),
        sequence_number=1,
        atomic_ops=atomic,
    )


def test_validate_operation_accepts_well_formed_ops() -> None:
    from kora.core import AtomicOp, AtomicOpType, boolean, define_schema, integer, string

    schema = define_schema(
        version=1,
        collections={
            "todos": {"title": string(), "done": boolean(default=False), "n": integer(default=0)}
        },
    )
    schema.validate_operation(_op("insert", {"title": "milk", "done": False}))
    schema.validate_operation(_op("update", {"done": True}))
    schema.validate_operation(_op("update", {"n": 3}, {"n": AtomicOp(AtomicOpType.INCREMENT, 1)}))
    schema.validate_operation(_op("delete", None))


@pytest.mark.parametrize(
    ("op_type", "data", "field"),
    [
        ("insert", {"done": True}, "title"),  # required field missing
        ("insert", {"title": 5}, "title"),  # wrong kind
        ("update", {"title": None}, "title"),  # not optional
        ("update", {"colour": "red"}, "colour"),  # unknown field
    ],
)
def test_validate_operation_names_the_bad_field(op_type: str, data: object, field: str) -> None:
    from kora.core import SchemaValidationError, boolean, define_schema, string

    schema = define_schema(
        version=1, collections={"todos": {"title": string(), "done": boolean(default=False)}}
    )
    with pytest.raises(SchemaValidationError) as info:
        schema.validate_operation(_op(op_type, data))
    assert info.value.field == field


def test_validate_operation_rejects_unknown_collection() -> None:
    from kora.core import SchemaValidationError, define_schema, string

    schema = define_schema(version=1, collections={"notes": {"title": string()}})
    with pytest.raises(SchemaValidationError):
        schema.validate_operation(_op("delete", None))
