"""Length-checked binary encoding primitives shared by the masking messages and key derivation.

All integers are little-endian.  An identifier (artist id) is a 1-byte length followed by
1..255 bytes of UTF-8, so concatenations of identifiers are unambiguous.  :class:`ByteReader`
fails closed with :class:`SecureAggregationError` on any truncation or trailing data.
"""

from __future__ import annotations

import struct

from fedstyle_secure.errors import SecureAggregationError

MAX_ID_BYTES = 255


def pack_id(identifier: str) -> bytes:
    """``u8 length || utf-8 bytes`` of a non-empty identifier."""
    raw = identifier.encode("utf-8")
    if not 0 < len(raw) <= MAX_ID_BYTES:
        raise SecureAggregationError(f"identifier {identifier!r} must be 1..{MAX_ID_BYTES} UTF-8 bytes")
    return struct.pack("<B", len(raw)) + raw


def pack_optional_id(identifier: str) -> bytes:
    """Like :func:`pack_id` but encodes the empty string (the server) as a zero length."""
    return pack_id(identifier) if identifier else b"\x00"


def pack_u8(value: int) -> bytes:
    return struct.pack("<B", value)


def pack_u16(value: int) -> bytes:
    return struct.pack("<H", value)


def pack_u32(value: int) -> bytes:
    return struct.pack("<I", value)


def pack_u64(value: int) -> bytes:
    return struct.pack("<Q", value)


class ByteReader:
    """Sequential reader over a message that rejects truncated or over-long input."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(bytes(data))
        self._offset = 0
        self._what = what

    def take(self, size: int) -> bytes:
        """The next ``size`` bytes."""
        return bytes(self.take_view(size))

    def take_view(self, size: int) -> memoryview:
        """The next ``size`` bytes without copying (for large vectors)."""
        end = self._offset + size
        if size < 0 or end > len(self._data):
            raise SecureAggregationError(
                f"{self._what}: truncated, needed {size} bytes at offset {self._offset} of {len(self._data)}"
            )
        view = self._data[self._offset : end]
        self._offset = end
        return view

    def _unpack(self, fmt: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def u8(self) -> int:
        return self._unpack("<B")

    def u16(self) -> int:
        return self._unpack("<H")

    def u32(self) -> int:
        return self._unpack("<I")

    def u64(self) -> int:
        return self._unpack("<Q")

    def optional_identifier(self) -> str:
        """An identifier, or "" for a zero length (the server)."""
        raw = self.take(self.u8())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SecureAggregationError(f"{self._what}: identifier is not valid UTF-8") from exc

    def identifier(self) -> str:
        identifier = self.optional_identifier()
        if not identifier:
            raise SecureAggregationError(f"{self._what}: empty identifier")
        return identifier

    def finish(self) -> None:
        """Reject trailing bytes."""
        if self._offset != len(self._data):
            raise SecureAggregationError(f"{self._what}: {len(self._data) - self._offset} unexpected trailing bytes")
