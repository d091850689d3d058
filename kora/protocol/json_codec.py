"""The JSON wire format: one JSON object per frame, byte-compatible with the Kora.js reference.

``encode`` writes exactly what the reference's ``JSON.stringify`` writes: keys in the
reference's order (the order in which its client and server build each message), no
whitespace, JavaScript number formatting.  ``decode`` accepts text or UTF-8 bytes and is
strict where Python's ``json`` module is lax:

* the frame size is checked before parsing, nesting depth by an iterative pre-scan (so a
  100,000-deep ``[[[[`` never reaches a recursive parser);
* ``NaN``/``Infinity`` literals, numbers that overflow a double, integer literals longer than
  Python parses, duplicate object keys and unpaired surrogates (raw or ``\\udxxx``-escaped)
  are refused;
* every field is type-checked (``true`` is not an integer, ``1.0`` is not an integer either),
  counters must be safe integers (0..2**53-1), and the limits of ``Limits`` apply.

Spec 2.2 bytes quirks: a top-level ``data``/``previousData`` value ``{"__kora_bytes__": b64}``
(the legacy raw-bytes wrapper) is decoded into ``{"$koraBytes": b64}``, the canonical binary
form of op data.  The reference also turns any object whose keys are all non-negative integer
strings with number values into bytes ("legacy indexed byte record"); we deliberately do not:
such an object stays the object it is, because a JSON field can legitimately hold one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any, Final, NoReturn

from kora.core.canonical import fast_path_is_exact, json_stringify, json_stringify_checked
from kora.core.errors import MalformedOperationError
from kora.core.operation import Operation
from kora.core.operations import (
    common_operation_from_wire,
    operation_from_wire,
    operation_to_wire,
)
from kora.protocol.errors import (
    DuplicateKeyError,
    FrameTooLargeError,
    InvalidJsonError,
    InvalidNumberError,
    InvalidOperationError,
    InvalidStringError,
    InvalidValueError,
    LocalProtocolError,
    MissingFieldError,
    NestingTooDeepError,
    OperationTooLargeError,
    RemoteProtocolError,
    TooManyOperationsError,
    UnknownMessageTypeError,
    VersionVectorTooLargeError,
    WrongTypeError,
)
from kora.protocol.limits import DEFAULT_LIMITS, MAX_SAFE_INTEGER, Limits
from kora.protocol.malformed import MalformedOperation
from kora.protocol.messages import (
    MESSAGE_TYPES,
    SIDE_CHANNEL_TYPES,
    Acknowledgment,
    AwarenessUpdate,
    BlobChunkPush,
    BlobChunkRequest,
    BlobChunkResponse,
    ErrorMessage,
    Handshake,
    HandshakeResponse,
    Message,
    OperationBatch,
    OperationRejected,
    YjsDocUpdate,
)
from kora.protocol.shared_encoding import SharedEncodings

__all__ = ["JsonCodec"]

_LEGACY_BYTES: Final = "__kora_bytes__"
_KORA_BYTES: Final = "$koraBytes"

# A backslash escape inside a JSON string (its second char may be a quote or a backslash).
_ESCAPE: Final = re.compile(r"\\.", re.DOTALL)
# A surrogate escape: then the decoded strings need a closer look.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_PARENS: Final = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_STRUCTURE: Final = bytes(b for b in range(256) if b not in b'[]{}"')
_DEPTH_STEP: Final = [1 if b == ord("(") else -1 for b in range(256)]


# ---------------------------------------------------------------- field kinds


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _wrong(name: str, expected: str, value: object) -> WrongTypeError:
    return WrongTypeError(f"{name} must be {expected}, got {_type_name(value)}")


def _str(name: str, value: object, _limits: Limits) -> str:
    if type(value) is not str:
        raise _wrong(name, "a string", value)
    return value


def _nullable_str(name: str, value: object, _limits: Limits) -> str | None:
    if value is not None and type(value) is not str:
        raise _wrong(name, "a string or null", value)
    return value


def _bool(name: str, value: object, _limits: Limits) -> bool:
    if type(value) is not bool:
        raise _wrong(name, "a boolean", value)
    return value


def _counter(name: str, value: object, _limits: Limits) -> int:
    if type(value) is not int:
        raise _wrong(name, "an integer", value)
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise InvalidValueError(f"{name} must be in 0..2**53-1, got {value}")
    return value


def _int(name: str, value: object, _limits: Limits) -> int:
    if type(value) is not int:
        raise _wrong(name, "an integer", value)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise InvalidValueError(f"{name} must be a safe integer, got {value}")
    return value


def _number(name: str, value: object, _limits: Limits) -> int | float:
    if type(value) is float:
        return value
    return _int(name, value, _limits)


def _object(name: str, value: object, _limits: Limits) -> dict[str, Any]:
    if type(value) is not dict:
        raise _wrong(name, "an object", value)
    return value


def _version_vector(name: str, value: object, limits: Limits) -> dict[str, int]:
    vector = _object(name, value, limits)
    if len(vector) > limits.max_version_vector_entries:
        raise VersionVectorTooLargeError(
            f"{name} has {len(vector)} entries (limit {limits.max_version_vector_entries})"
        )
    for node, seq in vector.items():
        _counter(f"{name}[{node!r}]", seq, limits)
    return vector


def _scope(name: str, value: object, limits: Limits) -> dict[str, Any]:
    scope = _object(name, value, limits)
    for collection, fields in scope.items():
        _object(f"{name}[{collection!r}]", fields, limits)
    return scope


def _str_tuple(name: str, value: object, _limits: Limits) -> tuple[str, ...]:
    if type(value) is not list or not all(type(item) is str for item in value):
        raise _wrong(name, "an array of strings", value)
    return tuple(value)


def _object_tuple(name: str, value: object, _limits: Limits) -> tuple[dict[str, Any], ...]:
    if type(value) is not list or not all(type(item) is dict for item in value):
        raise _wrong(name, "an array of objects", value)
    return tuple(value)


def _operations(name: str, value: object, limits: Limits) -> list[Any]:
    if type(value) is not list:
        raise _wrong(name, "an array", value)
    if len(value) > limits.max_operations_per_batch:
        raise TooManyOperationsError(
            f"batch holds {len(value)} operations (limit {limits.max_operations_per_batch})"
        )
    return value  # turned into Operation objects by the codec


_Check = Callable[[str, object, Limits], Any]
# (wire name, attribute name, check, required), in the order the reference writes them.
_Field = tuple[str, str, _Check, bool]

_SCHEMAS: Final[dict[str, tuple[_Field, ...]]] = {
    Handshake.TYPE: (
        ("nodeId", "node_id", _str, True),
        ("versionVector", "version_vector", _version_vector, True),
        ("schemaVersion", "schema_version", _int, True),
        ("authToken", "auth_token", _str, False),
        ("supportedWireFormats", "supported_wire_formats", _str_tuple, False),
        ("syncScope", "sync_scope", _scope, False),
        ("syncQueries", "sync_queries", _object_tuple, False),
        ("deltaCursor", "delta_cursor", _str, False),
        ("lastDeliverySequence", "last_delivery_sequence", _counter, False),
    ),
    HandshakeResponse.TYPE: (
        ("nodeId", "node_id", _str, True),
        ("versionVector", "version_vector", _version_vector, True),
        ("schemaVersion", "schema_version", _int, True),
        ("accepted", "accepted", _bool, True),
        ("rejectReason", "reject_reason", _str, False),
        ("supportedSchemaMin", "supported_schema_min", _int, False),
        ("supportedSchemaMax", "supported_schema_max", _int, False),
        ("selectedWireFormat", "selected_wire_format", _str, False),
        ("serverTime", "server_time", _counter, False),
        ("serverMaxDeliverySequence", "server_max_delivery_sequence", _counter, False),
        ("blobStorageEnabled", "blob_storage_enabled", _bool, False),
        ("acceptedScope", "accepted_scope", _scope, False),
    ),
    OperationBatch.TYPE: (
        ("operations", "operations", _operations, True),
        ("isFinal", "is_final", _bool, True),
        ("batchIndex", "batch_index", _counter, True),
        ("cursor", "cursor", _str, False),
        ("totalBatches", "total_batches", _counter, False),
        ("baseDeliverySequence", "base_delivery_sequence", _counter, False),
        ("maxDeliverySequence", "max_delivery_sequence", _counter, False),
    ),
    Acknowledgment.TYPE: (
        ("acknowledgedMessageId", "acknowledged_message_id", _str, True),
        ("lastSequenceNumber", "last_sequence_number", _counter, True),
        ("deliverySequence", "delivery_sequence", _counter, False),
    ),
    ErrorMessage.TYPE: (
        ("code", "code", _str, True),
        ("message", "message", _str, True),
        ("retriable", "retriable", _bool, True),
    ),
    OperationRejected.TYPE: (
        ("operationId", "operation_id", _str, True),
        ("collection", "collection", _str, True),
        ("recordId", "record_id", _str, True),
        ("code", "code", _str, True),
        ("message", "message", _str, True),
        ("retriable", "retriable", _bool, True),
    ),
    AwarenessUpdate.TYPE: (
        ("clientId", "client_id", _number, True),
        ("states", "states", _object, True),
    ),
    YjsDocUpdate.TYPE: (
        ("collection", "collection", _str, True),
        ("recordId", "record_id", _str, True),
        ("field", "field", _str, True),
        ("update", "update", _str, True),
    ),
    BlobChunkRequest.TYPE: (
        ("requestId", "request_id", _str, True),
        ("hash", "hash", _str, True),
    ),
    BlobChunkResponse.TYPE: (
        ("requestId", "request_id", _str, True),
        ("bytes", "bytes", _nullable_str, True),
    ),
    BlobChunkPush.TYPE: (
        ("hash", "hash", _str, True),
        ("bytes", "bytes", _str, True),
    ),
}
assert _SCHEMAS.keys() == MESSAGE_TYPES.keys()

# An operation batch's fields after ``operations`` (which comes first), for the shared path.
assert _SCHEMAS[OperationBatch.TYPE][0][0] == "operations"
_BATCH_TAIL_FIELDS: Final = _SCHEMAS[OperationBatch.TYPE][1:]
_BATCH_HEAD: Final = '{"type":"operation-batch","messageId":'
# Strings whose JSON is themselves in quotes (printable ASCII but the quote and backslash),
# and integers that JavaScript prints digit for digit.
_PLAIN_STRING: Final = re.compile(r"[ !#-\[\]-~]*")
_MAX_PLAIN_INT: Final = 2**53
_PLAIN_TEXT: Final = {True: "true", False: "false"}


def _operation_is_exact(op: Operation, wire: dict[str, Any]) -> bool:
    """json_stringify's fast-path check of one operation's wire object (``wire``), by its
    known shape: exact ``str`` and safe ``int`` fields, and the generic walk over its data
    parts only."""
    timestamp = op.timestamp
    if not (
        type(op.id) is str
        and type(op.node_id) is str
        and type(wire["type"]) is str
        and type(op.collection) is str
        and type(op.record_id) is str
        and type(timestamp.node_id) is str
        and (op.transaction_id is None or type(op.transaction_id) is str)
        and (op.mutation_name is None or type(op.mutation_name) is str)
    ):
        return False
    for number in (timestamp.wall_time, timestamp.logical, op.sequence_number, op.schema_version):
        if type(number) is not int or not -_MAX_PLAIN_INT <= number <= _MAX_PLAIN_INT:
            return False
    for dependency in op.causal_deps:
        if type(dependency) is not str:
            return False
    for part in (wire["data"], wire["previousData"], wire.get("atomicOps")):
        if part is not None and not fast_path_is_exact(part):
            return False
    return True


def _quoted(value: int | str) -> str:
    return f'"{value}"' if type(value) is str else str(value)


_KNOWN_KEYS: Final = {
    type_: frozenset({"type", "messageId", *(wire for wire, _, _, _ in fields)})
    for type_, fields in _SCHEMAS.items()
}


# ---------------------------------------------------------------- parsing


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(f"object repeats the key {key!r}")
            seen.add(key)
    return result


def _reject_constant(name: str) -> NoReturn:
    raise InvalidNumberError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise InvalidNumberError(f"number {text[:40]!r} is too large for a double")
    return number


def _check_depth(text: str, limit: int) -> None:
    """Raise NestingTooDeepError if arrays/objects nest deeper than ``limit``.

    Iterative and linear: no recursion, so a 100,000-deep ``[[[[`` costs a few
    milliseconds and never reaches the recursive parser.
    """
    structure: bytes | None = None
    if "\\" not in text:
        # Without escapes every quote opens or closes a string.  Keep only quotes and
        # brackets (UTF-8 encodes non-ASCII without ASCII bytes), then drop the "" pairs
        # left to right: if no quote is left, each string held no bracket and what is left
        # is exactly the brackets outside strings.  A few C passes over the frame; a string
        # with a bracket in it takes the general path below.
        kept = text.encode("utf-8", "surrogatepass").translate(_PARENS, _NOT_STRUCTURE)
        if kept.count(b"(") <= limit:
            return  # cannot be deeper than the number of openers (strings included)
        paired = kept.replace(b'""', b"")
        if b'"' not in paired:
            structure = paired
    elif text.count("[") + text.count("{") <= limit:
        return
    if structure is None:
        # Drop escapes, then everything between quotes: what is left is outside strings.
        if "\\" in text:
            text = _ESCAPE.sub("", text)
        outside = "".join(text.split('"')[::2])
        # Keep only the brackets, as b"(" and b")".  Non-ASCII outside a string is invalid
        # JSON anyway (the parser reports it), so dropping it here is safe.
        structure = outside.encode("ascii", "ignore").translate(_PARENS, _NOT_BRACKETS)
    too_deep = b"(" * (limit + 1)
    # Each pass deletes the innermost pairs, i.e. one level of the tree; a run of
    # limit + 1 openers (the usual attack) is found by a C-speed substring search.
    for _ in range(limit):
        if too_deep in structure:
            raise NestingTooDeepError(f"arrays/objects nest deeper than {limit} levels")
        reduced = structure.replace(b"()", b"")
        if len(reduced) == len(structure):
            break
        structure = reduced
    # Left over: unbalanced text (the parser will reject it) or a really deep tree.
    if b"(" in structure and max(accumulate(map(_DEPTH_STEP.__getitem__, structure))) > limit:
        raise NestingTooDeepError(f"arrays/objects nest deeper than {limit} levels")


def _has_lone_surrogate(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# Built once (json.loads with arguments builds a decoder and its scanner per call); shared
# like json's own default decoder.
_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_unique_pairs,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)


def _parse(text: str, limits: Limits) -> Any:
    _check_depth(text, limits.max_nesting_depth)
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidJsonError(f"not valid JSON: {exc}") from exc
    except ValueError as exc:  # e.g. an integer literal of more than 4300 digits
        raise InvalidNumberError(f"number cannot be parsed: {exc}") from exc
    except RecursionError as exc:  # unreachable after the depth scan; kept as a guard
        raise NestingTooDeepError("arrays/objects nest too deeply") from exc
    # (A str frame with a raw surrogate was refused before parsing.)
    if "\\" in text and _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise InvalidStringError("a string holds an unpaired UTF-16 surrogate")
    return value


def _legacy_bytes_to_kora_bytes(data: dict[str, Any]) -> None:
    """Spec 2.2: ``{"__kora_bytes__": b64}`` top-level values become ``{"$koraBytes": b64}``."""
    for key, value in data.items():
        if type(value) is dict and _LEGACY_BYTES in value and len(value) == 1:
            tagged = value[_LEGACY_BYTES]
            if type(tagged) is str:
                data[key] = {_KORA_BYTES: tagged}


def _operation(wire: object, position: int, legacy_bytes: bool) -> Operation:
    if legacy_bytes and type(wire) is dict:
        for key in ("data", "previousData"):
            data = wire.get(key)
            if type(data) is dict:
                _legacy_bytes_to_kora_bytes(data)
    try:
        op = operation_from_wire(wire)  # type: ignore[arg-type]
    except MalformedOperationError as exc:
        raise InvalidOperationError(f"operation {position}: {exc}") from exc
    if op.sequence_number > MAX_SAFE_INTEGER or op.schema_version > MAX_SAFE_INTEGER:
        raise InvalidOperationError(
            f"operation {position}: sequenceNumber or schemaVersion is beyond 2**53-1"
        )
    return op


def _operation_size(wire: object) -> int:
    return len(json.dumps(wire, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


class JsonCodec:
    """Encode and decode JSON frames.

    Args:
        limits: What ``decode`` accepts at most.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits

    def encode(self, message: Message, shared: SharedEncodings | None = None) -> str:
        """The JSON text of ``message``, byte-identical to the reference's.

        Args:
            message: What to encode.
            shared: Where an ``operation-batch``'s operations are encoded once for every
                session that sends them (the text is the same either way).

        Raises:
            LocalProtocolError: If ``message`` is not a protocol message, or its ``extra``
                repeats a known field.
        """
        if type(message) is OperationBatch and message.operations:
            if shared is not None:
                return self._encode_batch(message, shared)
            return self._encode_fresh_batch(message)
        wire = self._wire(message)
        try:
            return json_stringify(wire)
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"cannot encode {message.TYPE}: {exc}") from exc

    def _wire(self, message: Message) -> dict[str, Any]:
        """The message as the JSON object the reference sends (values shared, not copied)."""
        try:
            fields = _SCHEMAS[message.TYPE]
        except (AttributeError, KeyError):
            raise LocalProtocolError(f"not a protocol message: {message!r}") from None
        wire: dict[str, Any] = {"type": message.TYPE, "messageId": message.message_id}
        for wire_name, attribute, _, required in fields:
            value = getattr(message, attribute)
            if value is None and not required:
                continue
            if wire_name == "operations":
                value = [operation_to_wire(op) for op in value]
            elif type(value) is tuple:
                value = list(value)
            wire[wire_name] = value
        if message.extra:
            known = _KNOWN_KEYS[message.TYPE]
            for key, value in message.extra.items():
                if key in known:
                    raise LocalProtocolError(f"extra field {key!r} repeats a known field")
                wire[key] = value
        return wire

    def _encode_fresh_batch(self, message: OperationBatch) -> str:
        # What the general path writes, but json_stringify's walk over the whole frame (a
        # third of the encoding) is replaced by a check of each operation by its known
        # shape; the frame's text is the same.
        wire = self._wire(message)
        envelope = [value for key, value in wire.items() if key != "operations"]
        exact = fast_path_is_exact(envelope) and all(
            map(_operation_is_exact, message.operations, wire["operations"])
        )
        try:
            return json_stringify_checked(wire) if exact else json_stringify(wire)
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"cannot encode {message.TYPE}: {exc}") from exc

    def _encode_batch(self, message: OperationBatch, shared: SharedEncodings) -> str:
        # JSON.stringify output is compositional: the frame is its envelope's text with the
        # operations' texts (each computed once per operation) joined in place of the array.
        tail: dict[str, Any] = {}
        plain = not message.extra
        for wire_name, attribute, _, required in _BATCH_TAIL_FIELDS:
            value = getattr(message, attribute)
            if value is not None or required:
                tail[wire_name] = value
                kind = type(value)
                if not (
                    kind is bool
                    or (kind is int and -_MAX_PLAIN_INT <= value <= _MAX_PLAIN_INT)
                    or (kind is str and _PLAIN_STRING.fullmatch(value))
                ):
                    plain = False
        if message.extra:
            known = _KNOWN_KEYS[OperationBatch.TYPE]
            for key, value in message.extra.items():
                if key in known:
                    raise LocalProtocolError(f"extra field {key!r} repeats a known field")
                tail[key] = value
        message_id = message.message_id
        try:
            operations = ",".join([shared.operation_json(op) for op in message.operations])
            if type(message_id) is str and _PLAIN_STRING.fullmatch(message_id):
                head = f'"{message_id}"'
            else:
                head = json_stringify(message_id)
            if plain:
                # Only booleans, safe integers and strings that need no escaping: their JSON
                # is their plain text (what json_stringify would write, without its checks).
                rest = ",".join(
                    f'"{key}":{_PLAIN_TEXT[value] if type(value) is bool else _quoted(value)}'
                    for key, value in tail.items()
                )
            else:
                rest = json_stringify(tail)[1:-1]
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"cannot encode {message.TYPE}: {exc}") from exc
        return f'{_BATCH_HEAD}{head},"operations":[{operations}],{rest}}}'

    def encode_bytes(self, message: Message) -> bytes:
        """``encode`` as UTF-8 bytes."""
        return self.encode(message).encode("utf-8")

    def decode(self, frame: str | bytes | bytearray | memoryview) -> Message:
        """The message in one JSON frame (text, or UTF-8 bytes as in a binary frame).

        Raises:
            RemoteProtocolError: With a stable ``code`` for every way the frame can be
                wrong.  Errors inside a side-channel message (awareness, yjs, blob) are
                not ``fatal``: drop the frame and keep the session.
        """
        return self._decode(frame, None)

    def decode_lenient(
        self, frame: str | bytes | bytearray | memoryview
    ) -> tuple[Message, tuple[MalformedOperation, ...]]:
        """``decode``, but an ``operation-batch`` keeps going past malformed operations.

        Each operation that fails its own checks (``INVALID_OPERATION``, or
        ``OPERATION_TOO_LARGE``) is set aside as a ``MalformedOperation`` when it names
        itself (string ``id``, ``collection`` and ``recordId``); the batch comes back with
        the others, in order.  The envelope gets every check of ``decode``.

        Returns:
            The message, and the malformed operations in batch order (empty for anything
            but a batch that had some).

        Raises:
            RemoteProtocolError: As ``decode``; also for a malformed operation that does
                not name itself.
        """
        malformed: list[MalformedOperation] = []
        message = self._decode(frame, malformed)
        return message, tuple(malformed)

    def _decode(
        self,
        frame: str | bytes | bytearray | memoryview,
        malformed: list[MalformedOperation] | None,
    ) -> Message:
        max_bytes = self.limits.max_frame_bytes
        if isinstance(frame, str):
            text = frame
            if len(text) > max_bytes:  # every character takes at least one byte
                raise FrameTooLargeError(f"frame of {len(text)}+ bytes exceeds {max_bytes}")
            try:
                size = len(text.encode("utf-8"))  # fast; refuses raw surrogates
            except UnicodeEncodeError as exc:
                raise InvalidStringError(f"frame holds an unpaired surrogate: {exc}") from exc
        else:
            size = len(frame)
            if size <= max_bytes:
                try:
                    text = bytes(frame).decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidStringError(f"frame is not valid UTF-8: {exc}") from exc
        if size > max_bytes:
            raise FrameTooLargeError(f"frame of {size} bytes exceeds the limit of {max_bytes}")
        if text.startswith(_ACK_START):
            acknowledgment = _plain_acknowledgment(text)
            if acknowledgment is not None:
                return acknowledgment
        value = _parse(text, self.limits)
        if type(value) is not dict:
            raise InvalidJsonError(f"a frame must hold a JSON object, got {_type_name(value)}")
        # Only a frame that spells the legacy wrapper's key, or escapes something (it may
        # be spelled "\\u005f_kora_bytes__"), can hold one: the others skip the data scan.
        legacy_bytes = _LEGACY_BYTES in text or "\\" in text
        return self._message(value, size, malformed, legacy_bytes)

    def _message(
        self,
        wire: dict[str, Any],
        size: int,
        malformed: list[MalformedOperation] | None,
        legacy_bytes: bool,
    ) -> Message:
        type_ = wire.get("type")
        if type_ is None:
            raise MissingFieldError("message has no type")
        if type(type_) is not str:
            raise _wrong("type", "a string", type_)
        cls = MESSAGE_TYPES.get(type_)
        if cls is None:
            raise UnknownMessageTypeError(f"unknown message type {type_[:80]!r}")
        try:
            return self._fields(cls, wire, size, malformed, legacy_bytes)
        except RemoteProtocolError as exc:
            if type_ in SIDE_CHANNEL_TYPES:
                exc.fatal = False  # spec 1.4: never let a side channel end a session
            raise

    def _fields(
        self,
        cls: type[Message],
        wire: dict[str, Any],
        size: int,
        malformed: list[MalformedOperation] | None,
        legacy_bytes: bool,
    ) -> Message:
        limits = self.limits
        message_id = wire.get("messageId")
        if message_id is None:
            raise MissingFieldError(f"{cls.TYPE} has no messageId")
        values: dict[str, Any] = {"message_id": _str("messageId", message_id, limits)}
        for wire_name, attribute, check, required in _SCHEMAS[cls.TYPE]:
            if wire_name not in wire or (not required and wire[wire_name] is None):
                if required:
                    raise MissingFieldError(f"{cls.TYPE} has no {wire_name}")
                continue
            values[attribute] = check(wire_name, wire[wire_name], limits)
        if cls is OperationBatch:
            values["operations"] = self._operations(
                values["operations"], size, malformed, legacy_bytes
            )
        if len(wire) > len(values) + 1:
            known = _KNOWN_KEYS[cls.TYPE]
            values["extra"] = {k: v for k, v in wire.items() if k not in known}
        return cls(**values)

    def _operations(
        self,
        wires: Sequence[Any],
        frame_size: int,
        malformed: list[MalformedOperation] | None,
        legacy_bytes: bool,
    ) -> tuple[Operation, ...]:
        max_op = self.limits.max_operation_bytes
        # An operation's compact JSON is no longer than the text it came from (up to number
        # re-formatting), so small frames need no per-operation measuring.
        measure = frame_size > max_op
        if not measure and not legacy_bytes:
            # The common shape in one call each; the rest (and every error) the full way.
            found = [common_operation_from_wire(wire) for wire in wires]
            for op in found:
                if (
                    op is None
                    or op.sequence_number > MAX_SAFE_INTEGER
                    or op.schema_version > MAX_SAFE_INTEGER
                ):
                    break
            else:
                return tuple(found)  # type: ignore[arg-type]
        else:
            found = [None] * len(wires)
            if measure and malformed is None:
                # A frame with a too large operation is refused as such, whatever else.
                for position, wire in enumerate(wires):
                    _check_operation_size(wire, position, max_op)
                measure = False
        kept: list[Operation] = []
        for position, wire in enumerate(wires):
            op = found[position]
            if (
                op is not None
                and op.sequence_number <= MAX_SAFE_INTEGER
                and op.schema_version <= MAX_SAFE_INTEGER
            ):
                kept.append(op)
                continue
            try:
                if measure:
                    _check_operation_size(wire, position, max_op)
                kept.append(_operation(wire, position, legacy_bytes))
            except (InvalidOperationError, OperationTooLargeError) as exc:
                if malformed is None:
                    raise
                named = MalformedOperation.named(position, wire, exc)
                if named is None:
                    raise
                malformed.append(named)
        return tuple(kept)


# An acknowledgment exactly as JSON.stringify writes one (the reference's key order, no
# whitespace), with ids that need no unescaping and integer counters: every client sends
# one per delivery batch, so a server with many clients reads a great many of them.
_ACK_START: Final = '{"type":"acknowledgment",'
_PLAIN_ACK: Final = re.compile(
    r'\{"type":"acknowledgment","messageId":"([ !#-\[\]-~]*)",'
    r'"acknowledgedMessageId":"([ !#-\[\]-~]*)",'
    r'"lastSequenceNumber":(0|[1-9][0-9]{0,15})'
    r'(?:,"deliverySequence":(0|[1-9][0-9]{0,15}))?\}'
)


def _plain_acknowledgment(text: str) -> Acknowledgment | None:
    """The acknowledgment in ``text`` if it has the plain form (the full decoder would give
    the same message), else ``None``."""
    match = _PLAIN_ACK.fullmatch(text)
    if match is None:
        return None
    message_id, acknowledged, last, delivery = match.groups()
    last_sequence = int(last)
    delivery_sequence = None if delivery is None else int(delivery)
    if last_sequence > MAX_SAFE_INTEGER or (
        delivery_sequence is not None and delivery_sequence > MAX_SAFE_INTEGER
    ):
        return None  # the full decoder says why
    return Acknowledgment(
        message_id=message_id,
        acknowledged_message_id=acknowledged,
        last_sequence_number=last_sequence,
        delivery_sequence=delivery_sequence,
    )


def _check_operation_size(wire: object, position: int, max_op: int) -> None:
    op_size = _operation_size(wire)
    if op_size > max_op:
        raise OperationTooLargeError(
            f"operation {position} has {op_size} bytes of JSON (limit {max_op})"
        )
