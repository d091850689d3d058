"""Scope resolution (intersection, never widening) and the read and write checks."""

from __future__ import annotations

from typing import Any

import pytest

from kora.core.hlc import HLCTimestamp
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType
from kora.server.scopes import (
    Scope,
    operation_visible,
    resolve_scopes,
    scope_differs,
    scope_json,
    scope_values_equal,
    write_allowed,
)

TENANT: Scope = {"todos": {"owner": "u1"}}


def op(
    kind: OpType = OpType.INSERT,
    *,
    collection: str = "todos",
    data: dict[str, Any] | None = None,
    previous: dict[str, Any] | None = None,
    atomic: dict[str, AtomicOp] | None = None,
) -> Operation:
    return Operation(
        id="op",
        node_id="n",
        type=kind,
        collection=collection,
        record_id="r1",
        data=data,
        previous_data=previous,
        timestamp=HLCTimestamp(1, 0, "n"),
        sequence_number=1,
        atomic_ops=atomic,
    )


# ------------------------------------------------------------------ resolve_scopes


@pytest.mark.parametrize(
    ("handshake", "auth", "expected"),
    [
        pytest.param(None, None, None, id="nothing-anywhere-is-unscoped"),
        pytest.param({}, None, None, id="empty-client-scope-is-no-filter"),
        pytest.param(TENANT, None, TENANT, id="client-filter-without-auth-scopes"),
        pytest.param(None, TENANT, TENANT, id="auth-scopes-without-client-filter"),
        pytest.param({}, TENANT, TENANT, id="empty-client-scope-keeps-auth"),
        pytest.param(None, {}, {}, id="auth-grants-nothing"),
        pytest.param(TENANT, {}, {}, id="client-cannot-add-to-nothing"),
        pytest.param(
            {"secrets": {}}, {"responses": {}}, {}, id="spec-widening-example-grants-nothing"
        ),
        pytest.param(
            {"secrets": {}, "responses": {"form": "f1"}},
            {"responses": {}},
            {"responses": {"form": "f1"}},
            id="ungranted-collection-dropped-granted-one-narrowed",
        ),
        pytest.param({"todos": {"owner": "u2"}}, TENANT, TENANT, id="auth-field-values-win"),
        pytest.param(
            {"todos": {"done": False}},
            TENANT,
            {"todos": {"owner": "u1", "done": False}},
            id="client-adds-a-narrowing-field",
        ),
        pytest.param(
            {"todos": {}},
            {"todos": {"owner": "u1"}, "notes": {"owner": "u1"}},
            {"todos": {"owner": "u1"}},
            id="client-picks-a-subset-of-collections",
        ),
    ],
)
def test_resolve_scopes(
    handshake: Scope | None, auth: Scope | None, expected: Scope | None
) -> None:
    assert resolve_scopes(handshake, auth) == expected


def test_resolved_scopes_do_not_alias_their_inputs() -> None:
    auth = {"todos": {"owner": "u1"}}
    resolved = resolve_scopes(None, auth)
    assert resolved is not None
    resolved["todos"]["owner"] = "u2"  # type: ignore[index]
    assert auth == {"todos": {"owner": "u1"}}


def test_the_spec_widening_example_cannot_read_or_write_secrets() -> None:
    scopes = resolve_scopes({"secrets": {}}, {"responses": {}})
    secret = op(collection="secrets", data={"text": "x"})
    assert not operation_visible(secret, scopes, None)
    assert not write_allowed(secret, scopes, None)


# ------------------------------------------------------------------ comparisons


@pytest.mark.parametrize(
    ("sent", "resolved", "differs"),
    [
        (None, None, False),
        ({"a": {"x": 1}}, {"a": {"x": 1.0}}, False),  # JSON.stringify(1.0) is "1"
        ({"a": {"x": 1, "y": 2}, "b": {}}, {"b": {}, "a": {"y": 2, "x": 1}}, False),
        ({}, None, True),  # {} and "unscoped" are different views, as in the reference
        (None, {}, True),
        ({"a": {}}, {"a": {"owner": "u"}}, True),
        ({"a": {"x": True}}, {"a": {"x": 1}}, True),
        ({"a": {"x": "1"}}, {"a": {"x": 1}}, True),
    ],
)
def test_scope_differs(sent: Scope | None, resolved: Scope | None, differs: bool) -> None:
    assert scope_differs(sent, resolved) is differs


def test_scope_json_is_stable() -> None:
    assert scope_json({"b": {"y": 2.0, "x": [1.0]}, "a": {}}) == '{"a":{},"b":{"x":[1],"y":2}}'
    assert scope_json(None) == "null"


@pytest.mark.parametrize(
    ("actual", "expected", "equal"),
    [
        (1, 1.0, True),
        (0, -0.0, True),
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (True, True, True),
        ("1", 1, False),
        ("a", "a", True),
        (None, None, True),
        (None, "", False),
        (0, None, False),
        ([1], [1], False),  # === compares references
        ({}, {}, False),
    ],
)
def test_scope_values_compare_like_javascript_strict_equality(
    actual: Any, expected: Any, equal: bool
) -> None:
    assert scope_values_equal(actual, expected) is equal


# ------------------------------------------------------------------ operation_visible


@pytest.mark.parametrize(
    ("operation", "scopes", "record", "visible"),
    [
        pytest.param(op(data={"owner": "u2"}), None, None, True, id="unscoped-sees-all"),
        pytest.param(
            op(collection="notes", data={"owner": "u1"}),
            TENANT,
            None,
            False,
            id="collection-missing",
        ),
        pytest.param(op(data={"owner": "u1"}), TENANT, None, True, id="insert-matches"),
        pytest.param(op(data={"owner": "u2"}), TENANT, None, False, id="insert-other-tenant"),
        pytest.param(op(data={"title": "t"}), TENANT, None, False, id="scope-field-missing"),
        pytest.param(
            op(OpType.UPDATE, data={"title": "t"}),
            TENANT,
            {"owner": "u1"},
            True,
            id="update-backfilled-from-record",
        ),
        pytest.param(
            op(OpType.UPDATE, data={"title": "t"}),
            TENANT,
            {"owner": "u2"},
            False,
            id="update-of-other-tenant",
        ),
        pytest.param(
            op(OpType.UPDATE, data={"title": "t"}, previous={"owner": "u1"}),
            TENANT,
            None,
            True,
            id="update-backfilled-from-previous-data",
        ),
        pytest.param(
            op(OpType.UPDATE, data={"owner": "u2"}),
            TENANT,
            {"owner": "u1"},
            False,
            id="data-overrides-record",
        ),
        pytest.param(op(OpType.DELETE), TENANT, {"owner": "u1"}, True, id="delete-of-own-record"),
        pytest.param(
            op(OpType.DELETE), TENANT, {"owner": "u2"}, False, id="delete-of-other-record"
        ),
        pytest.param(
            op(OpType.DELETE), {"todos": {}}, None, False, id="nothing-to-judge-is-hidden"
        ),
        pytest.param(op(data={}), {"todos": {}}, None, True, id="empty-filter-grants-collection"),
        pytest.param(
            op(data={"level": True}), {"todos": {"level": 1}}, None, False, id="bool-is-not-number"
        ),
        pytest.param(
            op(data={"level": 1.0}), {"todos": {"level": 1}}, None, True, id="int-equals-float"
        ),
        pytest.param(
            op(data={"owner": None}), {"todos": {"owner": None}}, None, True, id="null-equals-null"
        ),
        pytest.param(
            op(data={"title": "t"}),
            {"todos": {"owner": None}},
            None,
            False,
            id="missing-is-not-null",
        ),
    ],
)
def test_operation_visible(
    operation: Operation, scopes: Scope | None, record: dict[str, Any] | None, visible: bool
) -> None:
    assert operation_visible(operation, scopes, record) is visible


# ------------------------------------------------------------------ write_allowed


@pytest.mark.parametrize(
    ("operation", "scopes", "record", "allowed"),
    [
        pytest.param(
            op(data={"owner": "u2"}), None, {"owner": "u3"}, True, id="unscoped-writes-all"
        ),
        pytest.param(
            op(collection="notes", data={"owner": "u1"}),
            TENANT,
            None,
            False,
            id="collection-not-granted",
        ),
        pytest.param(op(data={"owner": "u1"}), TENANT, None, True, id="insert-own"),
        pytest.param(op(data={"owner": "u2"}), TENANT, None, False, id="insert-for-other-tenant"),
        pytest.param(op(data={"title": "t"}), TENANT, None, False, id="insert-without-scope-field"),
        pytest.param(op(data=None), TENANT, None, False, id="insert-without-data"),
        pytest.param(
            op(data={"owner": "u1"}),
            TENANT,
            {"owner": "u2"},
            False,
            id="insert-over-other-tenants-record",
        ),
        pytest.param(
            op(data={"owner": "u1"}), TENANT, {"owner": "u1"}, True, id="insert-over-own-record"
        ),
        pytest.param(
            op(OpType.UPDATE, data={"title": "t"}), TENANT, {"owner": "u1"}, True, id="update-own"
        ),
        pytest.param(
            op(OpType.UPDATE, data={"title": "t", "owner": "u1"}, previous={"owner": "u1"}),
            TENANT,
            {"owner": "u2"},
            False,
            id="update-other-tenants-record-with-matching-data",
        ),
        pytest.param(
            op(OpType.UPDATE, data={"owner": "u2"}),
            TENANT,
            {"owner": "u1"},
            False,
            id="update-moves-record-out",
        ),
        pytest.param(
            op(OpType.UPDATE, data={"owner": "u1"}),
            TENANT,
            {"owner": "u2"},
            False,
            id="update-moves-record-in",
        ),
        pytest.param(
            op(OpType.UPDATE, data={"title": "t"}, previous={"owner": "u1"}),
            TENANT,
            None,
            True,
            id="update-before-insert-judged-on-its-own-data",
        ),
        pytest.param(
            op(OpType.UPDATE, data={"title": "t"}),
            TENANT,
            None,
            False,
            id="update-before-insert-without-scope-field",
        ),
        pytest.param(op(OpType.UPDATE), TENANT, None, False, id="update-with-nothing-to-judge"),
        pytest.param(
            op(
                OpType.UPDATE,
                data={"owner": "u1"},
                atomic={"owner": AtomicOp(AtomicOpType.APPEND, "x")},
            ),
            TENANT,
            {"owner": "u1"},
            False,
            id="atomic-op-on-a-scope-field",
        ),
        pytest.param(
            op(OpType.UPDATE, data={"n": 2}, atomic={"n": AtomicOp(AtomicOpType.INCREMENT, 1)}),
            TENANT,
            {"owner": "u1", "n": 1},
            True,
            id="atomic-op-on-another-field",
        ),
        pytest.param(op(OpType.DELETE), TENANT, {"owner": "u1"}, True, id="delete-own"),
        pytest.param(op(OpType.DELETE), TENANT, {"owner": "u2"}, False, id="delete-other-tenants"),
        pytest.param(op(OpType.DELETE), TENANT, None, False, id="delete-unknown-record"),
        pytest.param(
            op(OpType.DELETE), {"todos": {}}, None, False, id="delete-unknown-under-empty-filter"
        ),
        pytest.param(
            op(OpType.DELETE), {"todos": {}}, {"x": 1}, True, id="delete-under-empty-filter"
        ),
        pytest.param(op(data={}), {"todos": {}}, None, True, id="insert-under-empty-filter"),
    ],
)
def test_write_allowed(
    operation: Operation, scopes: Scope | None, record: dict[str, Any] | None, allowed: bool
) -> None:
    assert write_allowed(operation, scopes, record) is allowed
