"""Small ASGI HTTP helpers: bounded request bodies and plain responses."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qs

from kora.core.errors import RemoteError
from kora.server.transport import ASGIReceive, ASGIScope, ASGISend

__all__ = [
    "BodyTooLarge",
    "ClientDisconnected",
    "header",
    "query_param",
    "read_body",
    "send_bytes",
    "send_json",
]

Headers = Sequence[tuple[bytes, bytes]]


class BodyTooLarge(RemoteError):
    """The request body exceeds the limit (answer 413)."""

    code = "BODY_TOO_LARGE"


class ClientDisconnected(RemoteError):
    """The HTTP client went away before the request was read."""

    code = "CLIENT_DISCONNECTED"


def header(scope: ASGIScope, name: bytes) -> str | None:
    """The first value of a request header (latin-1, as HTTP headers are), or ``None``."""
    wanted = name.lower()
    for key, value in scope.get("headers", ()):
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


def query_param(scope: ASGIScope, name: str) -> str | None:
    """The first value of a query-string parameter, or ``None``."""
    raw = bytes(scope.get("query_string", b"")).decode("latin-1")
    values = parse_qs(raw).get(name)
    return values[0] if values else None


async def read_body(scope: ASGIScope, receive: ASGIReceive, *, limit: int) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes.

    Raises:
        BodyTooLarge: Declared or actual size above ``limit``.
        ClientDisconnected: The client went away.
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {declared} bytes exceeds {limit}")
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("client disconnected while sending the body")
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def send_bytes(
    send: ASGISend,
    status: int,
    body: bytes,
    *,
    content_type: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Send a complete response."""
    raw_headers = [(b"content-length", str(len(body)).encode("ascii"))]
    if content_type is not None:
        raw_headers.append((b"content-type", content_type.encode("latin-1")))
    raw_headers.append((b"cache-control", b"no-store"))
    raw_headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(
    send: ASGISend,
    status: int,
    value: object,
    *,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Send a JSON response (UTF-8, compact)."""
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    await send_bytes(send, status, body, content_type="application/json", headers=headers)
