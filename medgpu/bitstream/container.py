"""The ``.mgpu`` container: one file that holds everything needed to decode a volume.

Layout (all integers little-endian)::

    offset      size  field
    0           8     magic  b"\\x89MGPU\\r\\n\\x1a"  (PNG-style: catches text-mode and 7-bit damage)
    8           2     format version (u16), currently 2
    10          2     flags (u16), 0
    12          4     N = header length (u32)
    16          N     header: zlib-compressed UTF-8 JSON (codec id, weights SHA-256, quality,
                      geometry, dtype, slice axis, GoP plan, intensity mapping, volume metadata);
                      version 1 stored the JSON uncompressed (still read)
    16+N        4     CRC-32 of bytes [0, 16+N)
    then one packet per GoP, back to back:
                4     payload length L (u32)
                4     CRC-32 of the payload (u32)
                L     payload (the codec's bytes for that GoP)
    index (at index_offset):
                4     packet count K (u32)
                16*K  per packet: record offset (u64), payload length (u32), payload CRC-32 (u32)
    trailer (last 16 bytes):
                8     index_offset (u64)
                4     CRC-32 of the index bytes
                4     end marker b"MGPE"

Every byte is covered by a check: the header and index by their CRCs, each payload by its
CRC, the packet records by the index (which must tile the data area exactly), the trailer by
the index position and the end marker. A reader opens the header, trailer and index only,
then seeks to the packets it needs, so a slice range decodes without reading the whole file.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from medgpu.errors import (
    CorruptStreamError,
    FormatError,
    InputError,
    OutputError,
    TruncatedStreamError,
    UnsupportedVersionError,
)
from medgpu.volume import normalize_slice_axis

MAGIC = b"\x89MGPU\r\n\x1a"
END_MARKER = b"MGPE"
FORMAT_VERSION = 2
"""2: the header JSON is zlib-compressed (source metadata such as DICOM attributes took up to
70 % of small streams in version 1, which stored it as plain JSON)."""

_PREFIX = struct.Struct("<8sHHI")  # magic, version, flags, header length
_U32 = struct.Struct("<I")
_RECORD = struct.Struct("<II")  # payload length, payload crc
_ENTRY = struct.Struct("<QII")  # record offset, payload length, payload crc
_TRAILER = struct.Struct("<QI4s")  # index offset, index crc, end marker
_MAX_HEADER = 64 * 1024 * 1024

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "codec_id": str,
    "weights_sha256": str,
    "quality": int,
    "shape": list,
    "dtype": str,
    "slice_axis": int,
    "plan": dict,
    "intensity": dict,
    "volume": dict,
}


def crc32(data: bytes) -> int:
    """CRC-32 (zlib polynomial) of ``data``."""
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class StreamHeader:
    """What a stream declares about itself; stored as JSON in the container header."""

    codec_id: str
    weights_hash: bytes
    quality: int
    shape: tuple[int, ...]
    dtype: str
    slice_axis: int
    plan: dict[str, Any]
    intensity: dict[str, Any]
    volume: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the weights hash as hex)."""
        return {
            "codec_id": self.codec_id,
            "weights_sha256": self.weights_hash.hex(),
            "quality": int(self.quality),
            "shape": [int(s) for s in self.shape],
            "dtype": self.dtype,
            "slice_axis": int(self.slice_axis),
            "plan": self.plan,
            "intensity": self.intensity,
            "volume": self.volume,
        }

    @classmethod
    def from_dict(cls, data: Any, version: int = FORMAT_VERSION) -> StreamHeader:
        """Validate and build from the parsed JSON header; raises :class:`CorruptStreamError`."""
        if not isinstance(data, dict):
            raise CorruptStreamError("corrupt stream header: not a JSON object")
        for key, kind in _REQUIRED.items():
            if key not in data:
                raise CorruptStreamError(f"corrupt stream header: missing field '{key}'")
            value = data[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise CorruptStreamError(f"corrupt stream header: field '{key}' has the wrong type")
        shape = data["shape"]
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise CorruptStreamError("corrupt stream header: bad shape")
        try:  # the rule the frame plan follows (2-D data: one slice along axis 2)
            if normalize_slice_axis(data["slice_axis"], min(len(shape), 3)) != data["slice_axis"]:
                raise ValueError("negative slice axis")
        except ValueError:
            raise CorruptStreamError("corrupt stream header: slice axis outside the shape") from None
        try:
            weights_hash = bytes.fromhex(data["weights_sha256"])
        except ValueError:
            raise CorruptStreamError("corrupt stream header: bad weights hash") from None
        if len(weights_hash) != 32:
            raise CorruptStreamError("corrupt stream header: weights hash is not SHA-256")
        return cls(
            codec_id=data["codec_id"],
            weights_hash=weights_hash,
            quality=data["quality"],
            shape=tuple(shape),
            dtype=data["dtype"],
            slice_axis=data["slice_axis"],
            plan=data["plan"],
            intensity=data["intensity"],
            volume=data["volume"],
            version=version,
        )


@dataclass(frozen=True)
class PacketEntry:
    """Where one GoP packet lies in the file."""

    offset: int  # of the packet record (length and CRC come first)
    length: int  # of the payload
    crc: int  # CRC-32 of the payload

    @property
    def end(self) -> int:
        return self.offset + _RECORD.size + self.length


@contextlib.contextmanager
def atomic_paths(*targets: str | os.PathLike[str], make_parents: bool = False) -> Iterator[list[Path]]:
    """Yield temporary paths beside ``targets``; on success move them all into place.

    On any exception the temporaries are removed and targets already moved in this call are
    removed too, so a failure leaves no partial output. ``make_parents`` creates missing
    folders of the targets (just before yielding, so that they stay empty for as short a time
    as possible) and removes those it created again on failure, if they are still empty:
    a folder that a concurrent writer has put a file into stays.
    """
    finals = [Path(t) for t in targets]
    temps = [p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.part") for p in finals]
    moved: list[Path] = []
    created: list[Path] = []  # folders this call made (or was making when it failed)
    try:
        for p in finals:
            if make_parents and not p.parent.is_dir():
                created += [d for d in (p.parent, *p.parent.parents) if not d.exists() and d not in created]
                try:
                    p.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise OutputError(f"cannot create output folder {p.parent}: {exc.strerror}") from None
            if not p.parent.is_dir():
                raise OutputError(f"output folder does not exist: {p.parent}")
        yield temps
        for tmp, final in zip(temps, finals):
            if not tmp.exists():
                raise OutputError(f"nothing was written for {final}")
        for tmp, final in zip(temps, finals):
            os.replace(tmp, final)
            moved.append(final)
    except BaseException:
        for p in temps + moved:
            with contextlib.suppress(OSError):
                p.unlink()
        for d in sorted(created, key=lambda d: len(d.parts), reverse=True):  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()  # only if it exists and is still empty
        raise


def _fsync_close(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()


def write_container(path: str | os.PathLike[str], header: StreamHeader, packets: Iterable[bytes]) -> int:
    """Write a container to ``path`` (not atomic: pass a temporary from :func:`atomic_paths`).

    ``packets`` may be a generator, so GoPs go to disk as they are coded. Returns the file size.
    """
    head = zlib.compress(json.dumps(header.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False).encode(), 9)
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(head)) + head
    entries: list[PacketEntry] = []
    try:
        fh = open(path, "wb")  # noqa: SIM115 - closed by _fsync_close
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    try:
        fh.write(prefix + _U32.pack(crc32(prefix)))
        pos = len(prefix) + _U32.size
        for payload in packets:
            payload = bytes(payload)
            if len(payload) >= 2**32:
                raise OutputError("a GoP packet exceeds 4 GiB; use a smaller --gop")
            entry = PacketEntry(pos, len(payload), crc32(payload))
            fh.write(_RECORD.pack(entry.length, entry.crc) + payload)
            entries.append(entry)
            pos = entry.end
        index = _U32.pack(len(entries)) + b"".join(_ENTRY.pack(e.offset, e.length, e.crc) for e in entries)
        fh.write(index + _TRAILER.pack(pos, crc32(index), END_MARKER))
        size = pos + len(index) + _TRAILER.size
    except OSError as exc:
        fh.close()
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        fh.close()
        raise
    _fsync_close(fh)
    return size


class ContainerReader:
    """Random access to a ``.mgpu`` file: header and index on open, packets on demand.

    Use as a context manager. Every structural check happens in the constructor; each
    payload's CRC is checked when it is read.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"no such file: {self.path}")
        if self.path.is_dir():
            raise InputError(f"expected a .mgpu file, got a folder: {self.path}")
        try:
            self._fh: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            self.size = os.fstat(self._fh.fileno()).st_size
            self.header, self.data_start = self._read_header()
            self.entries = self._read_index()
        except BaseException:
            self._fh.close()
            raise

    # -- structure -------------------------------------------------------------------------
    def _read_at(self, offset: int, n: int) -> bytes:
        self._fh.seek(offset)
        data = self._fh.read(n)
        if len(data) != n:
            raise TruncatedStreamError(f"truncated stream: {self.path.name} ends early")
        return data

    def _read_header(self) -> tuple[StreamHeader, int]:
        name = self.path.name
        if self.size < len(MAGIC) or self._read_at(0, len(MAGIC)) != MAGIC:
            raise FormatError(f"not a medgpu stream (bad magic): {name}")
        if self.size < _PREFIX.size + _U32.size + _U32.size + _TRAILER.size:
            raise TruncatedStreamError(f"truncated stream: {name} is only {self.size} bytes")
        _, version, _flags, n = _PREFIX.unpack(self._read_at(0, _PREFIX.size))
        end = _PREFIX.size + n
        if n > _MAX_HEADER or end + _U32.size > self.size:
            raise CorruptStreamError(f"truncated or corrupt stream header (bad length) in {name}")
        blob = self._read_at(0, end)
        (stored,) = _U32.unpack(self._read_at(end, _U32.size))
        if crc32(blob) != stored:
            raise CorruptStreamError(f"corrupt stream header (CRC mismatch) in {name}")
        if version > FORMAT_VERSION:
            raise UnsupportedVersionError(
                f"{name} uses container format version {version}; this medgpu reads up to "
                f"{FORMAT_VERSION}: upgrade medgpu"
            )
        if version < 1:
            raise CorruptStreamError(f"corrupt stream header (version {version}) in {name}")
        text = blob[_PREFIX.size :]
        try:
            if version >= 2:
                text = zlib.decompress(text)
            data = json.loads(text.decode("utf-8"))
        except (zlib.error, UnicodeDecodeError, ValueError):
            raise CorruptStreamError(f"corrupt stream header (not JSON) in {name}") from None
        return StreamHeader.from_dict(data, version), end + _U32.size

    def _read_index(self) -> list[PacketEntry]:
        name = self.path.name
        index_offset, index_crc, marker = _TRAILER.unpack(self._read_at(self.size - _TRAILER.size, _TRAILER.size))
        if marker != END_MARKER:
            raise TruncatedStreamError(f"truncated or damaged stream: {name} has no end marker")
        index_end = self.size - _TRAILER.size
        if not self.data_start <= index_offset <= index_end - _U32.size:
            raise CorruptStreamError(f"corrupt stream index (bad position) in {name}")
        index = self._read_at(index_offset, index_end - index_offset)
        if crc32(index) != index_crc:
            raise CorruptStreamError(f"corrupt stream index (CRC mismatch) in {name}")
        (count,) = _U32.unpack_from(index)
        if _U32.size + count * _ENTRY.size != len(index):
            raise CorruptStreamError(f"corrupt stream index (bad packet count) in {name}")
        entries = [PacketEntry(*_ENTRY.unpack_from(index, _U32.size + i * _ENTRY.size)) for i in range(count)]
        pos = self.data_start
        for e in entries:
            if e.offset != pos:
                raise CorruptStreamError(f"corrupt stream index (packets do not tile the file) in {name}")
            pos = e.end
        if pos != index_offset:
            raise CorruptStreamError(f"corrupt stream index (packets do not tile the file) in {name}")
        return entries

    # -- packets ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def read_packet(self, i: int) -> bytes:
        """Payload of packet ``i``, checked against its record and CRC."""
        if not 0 <= i < len(self.entries):
            raise IndexError(f"packet {i} out of range 0..{len(self.entries) - 1}")
        e = self.entries[i]
        record = self._read_at(e.offset, e.end - e.offset)
        length, crc = _RECORD.unpack_from(record)
        payload = record[_RECORD.size :]
        if length != e.length or crc != e.crc or crc32(payload) != e.crc:
            raise CorruptStreamError(f"corrupt packet {i} (CRC mismatch) in {self.path.name}")
        return payload

    def read_packets(self, indices: Iterable[int] | None = None) -> list[bytes]:
        """Payloads of ``indices`` (all packets when None), every CRC checked."""
        return [self.read_packet(i) for i in (range(len(self)) if indices is None else indices)]

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_stream_header(path: str | os.PathLike[str]) -> StreamHeader:
    """Header of a ``.mgpu`` file (checks header, index and trailer, not the payloads)."""
    with ContainerReader(path) as reader:
        return reader.header
