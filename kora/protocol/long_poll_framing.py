"""Body framing of the long-polling endpoints, shared by the server and the client.

A long-poll request or response carries several frames in one HTTP body. Binary (kora-pb1)
bodies put each frame behind its length as an unsigned LEB128 varint; JSON bodies are a
JSON array of frames (the server slices them out itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["decode_varint_frames", "encode_varint_frames"]

#: A length takes at most 5 varint bytes (35 bits): far above any frame limit.
_MAX_LENGTH_SHIFT: Final = 35


def encode_varint_frames(frames: Iterable[bytes]) -> bytes:
    """Each frame preceded by its length as an unsigned LEB128 varint."""
    out = bytearray()
    for frame in frames:
        length = len(frame)
        while True:
            byte = length & 0x7F
            length >>= 7
            if length:
                out.append(byte | 0x80)
            else:
                out.append(byte)
                break
        out += frame
    return bytes(out)


def decode_varint_frames(body: bytes) -> list[bytes]:
    """The frames of a body made by ``encode_varint_frames``.

    Raises:
        ValueError: The body is truncated or a length is malformed or over-long.
    """
    frames: list[bytes] = []
    position = 0
    while position < len(body):
        length = 0
        shift = 0
        while True:
            if position >= len(body) or shift > _MAX_LENGTH_SHIFT:
                raise ValueError("malformed frame length")
            byte = body[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if position + length > len(body):
            raise ValueError("truncated frame")
        frames.append(body[position : position + length])
        position += length
    return frames
