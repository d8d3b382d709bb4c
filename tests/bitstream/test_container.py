"""The .mgpu container: round trip, random access, and every kind of damage is caught."""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

from medgpu.bitstream.container import (
    MAGIC,
    ContainerReader,
    StreamHeader,
    atomic_paths,
    crc32,
    read_stream_header,
    write_container,
)
from medgpu.errors import (
    CorruptStreamError,
    FormatError,
    InputError,
    MedgpuError,
    TruncatedStreamError,
    UnsupportedVersionError,
)


def make_header(**overrides) -> StreamHeader:
    fields = dict(
        codec_id="test-codec",
        weights_hash=bytes(range(32)),
        quality=21,
        shape=(8, 9, 10),
        dtype="<i2",
        slice_axis=2,
        plan={"gop": 4, "gops": [[0, 4], [4, 8], [8, 10]]},
        intensity={"kind": "linear", "lo": -1024.0, "hi": 3071.0},
        volume={"affine": np.eye(4).tolist(), "header": {"sform_code": 1}},
    )
    fields.update(overrides)
    return StreamHeader(**fields)


PAYLOADS = [b"first gop payload", b"", b"\x00\x01\x02" * 7]


@pytest.fixture
def stream(tmp_path):
    path = tmp_path / "v.mgpu"
    size = write_container(path, make_header(), iter(PAYLOADS))
    assert size == path.stat().st_size
    return path


def read_all(path):
    with ContainerReader(path) as r:
        return r.header, r.read_packets()


def test_round_trip(stream):
    header, packets = read_all(stream)
    assert header == make_header()
    assert packets == PAYLOADS


def test_random_access_reads_one_packet(stream):
    with ContainerReader(stream) as r:
        assert len(r) == 3
        assert r.read_packet(2) == PAYLOADS[2]
        assert r.read_packet(0) == PAYLOADS[0]
        with pytest.raises(IndexError):
            r.read_packet(3)


def test_read_stream_header(stream):
    assert read_stream_header(stream).quality == 21


def test_zero_packets(tmp_path):
    path = tmp_path / "empty.mgpu"
    write_container(path, make_header(), [])
    assert read_all(path)[1] == []


def test_every_truncation_is_caught(stream, tmp_path):
    data = stream.read_bytes()
    bad = tmp_path / "cut.mgpu"
    for n in range(len(data)):
        bad.write_bytes(data[:n])
        with pytest.raises(FormatError):
            read_all(bad)


def test_every_single_bit_flip_is_caught(stream, tmp_path):
    data = bytearray(stream.read_bytes())
    bad = tmp_path / "flip.mgpu"
    for pos in range(len(data)):
        for bit in (0, 3, 7):
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            bad.write_bytes(bytes(flipped))
            with pytest.raises(FormatError):
                read_all(bad)


def test_random_bytes_are_not_a_stream(tmp_path):
    rng = np.random.default_rng(0)
    bad = tmp_path / "random.mgpu"
    for n in (0, 5, 100, 5000):
        bad.write_bytes(rng.bytes(n))
        with pytest.raises(FormatError, match="not a medgpu stream"):
            read_all(bad)
        bad.write_bytes(MAGIC + rng.bytes(n))
        with pytest.raises(FormatError):
            read_all(bad)


def test_truncated_message(stream, tmp_path):
    bad = tmp_path / "cut.mgpu"
    bad.write_bytes(stream.read_bytes()[:-5])
    with pytest.raises(TruncatedStreamError, match="truncated"):
        read_all(bad)


def test_payload_damage_names_the_packet(stream, tmp_path):
    data = bytearray(stream.read_bytes())
    data[data.index(PAYLOADS[0]) + 3] ^= 0x10
    bad = tmp_path / "flip.mgpu"
    bad.write_bytes(bytes(data))
    with ContainerReader(bad) as r:  # structure is intact: opening works
        assert r.read_packet(2) == PAYLOADS[2]
        with pytest.raises(CorruptStreamError, match="packet 0"):
            r.read_packet(0)


def _rewrite_header(data: bytes, version: int | None = None, header: dict | None = None) -> bytes:
    (n,) = struct.unpack_from("<I", data, 12)
    old_version = struct.unpack_from("<H", data, 8)[0]
    blob = data[16 : 16 + n]
    if header is not None:
        blob = json.dumps(header).encode()
        blob = zlib.compress(blob) if (old_version if version is None else version) >= 2 else blob
    elif version == 1:  # a version-1 file stored the JSON as it is
        blob = zlib.decompress(blob)
    prefix = MAGIC + struct.pack("<HHI", old_version if version is None else version, 0, len(blob)) + blob
    return prefix + struct.pack("<I", crc32(prefix)) + data[16 + n + 4 :]


def test_newer_version_is_refused_clearly(stream, tmp_path):
    bad = tmp_path / "future.mgpu"
    bad.write_bytes(_rewrite_header(stream.read_bytes(), version=99))
    with pytest.raises(UnsupportedVersionError, match="version 99"):
        read_all(bad)


def test_version_1_streams_with_a_plain_json_header_still_read(stream, tmp_path, monkeypatch):
    """Format 2 compresses the header; a format-1 file (plain JSON header) still decodes."""
    import types

    from medgpu.bitstream import container

    old = tmp_path / "v1.mgpu"
    monkeypatch.setattr(container, "FORMAT_VERSION", 1)
    monkeypatch.setattr(container, "zlib", types.SimpleNamespace(compress=lambda data, level: data, crc32=zlib.crc32,
                                                              error=zlib.error))
    write_container(old, make_header(), iter(PAYLOADS))
    monkeypatch.undo()
    raw = old.read_bytes()
    assert struct.unpack_from("<H", raw, 8)[0] == 1 and raw[16:17] == b"{"
    assert read_all(old) == (make_header(version=1), PAYLOADS)
    assert old.stat().st_size > stream.stat().st_size  # the compressed header is smaller


def test_header_missing_field_is_caught(stream, tmp_path):
    header = make_header().to_dict()
    del header["quality"]
    bad = tmp_path / "nofield.mgpu"
    # header length changes, so the index no longer tiles: still caught, either way
    bad.write_bytes(_rewrite_header(stream.read_bytes(), header=header))
    with pytest.raises(CorruptStreamError):
        read_all(bad)


def test_header_validation():
    good = make_header().to_dict()
    assert StreamHeader.from_dict(good) == make_header()
    for key, value in [("quality", "high"), ("shape", [0, 3]), ("slice_axis", 5), ("weights_sha256", "abc")]:
        with pytest.raises(CorruptStreamError):
            StreamHeader.from_dict({**good, key: value})


def test_missing_and_folder_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        ContainerReader(tmp_path / "nope.mgpu")
    with pytest.raises(InputError, match="folder"):
        ContainerReader(tmp_path)


def test_atomic_paths_commit_and_rollback(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.json"
    b.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_paths(a, b) as (ta, tb):
            ta.write_bytes(b"x")
            tb.write_text("new")
            raise RuntimeError("boom")
    assert not a.exists() and b.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]
    with atomic_paths(a, b) as (ta, tb):
        ta.write_bytes(b"x")
        tb.write_text("new")
    assert a.read_bytes() == b"x" and b.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json"]


def test_atomic_paths_missing_folder(tmp_path):
    with pytest.raises(MedgpuError, match="folder does not exist"):
        with atomic_paths(tmp_path / "no" / "x.mgpu"):
            pass


def test_atomic_paths_make_parents_creates_and_removes_only_its_own_empty_folders(tmp_path):
    target = tmp_path / "a" / "b" / "x.mgpu"
    with atomic_paths(target, target.with_suffix(".json"), make_parents=True) as (t, tj):
        assert t.parent.is_dir()  # made before the body writes
        t.write_bytes(b"x")
        tj.write_text("{}")
    assert target.read_bytes() == b"x"
    # a failed call removes the folders it made ...
    other = tmp_path / "c" / "d" / "y.mgpu"
    with pytest.raises(RuntimeError):
        with atomic_paths(other, make_parents=True) as (t,):
            t.write_bytes(b"y")
            raise RuntimeError("boom")
    assert not (tmp_path / "c").exists()
    # ... but keeps those that already existed and those a concurrent writer has put a file into
    with pytest.raises(RuntimeError):
        with atomic_paths(tmp_path / "a" / "e" / "z.mgpu", make_parents=True) as (t,):
            (tmp_path / "a" / "e" / "theirs.mgpu").write_bytes(b"")
            raise RuntimeError("boom")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b", "e"]
    assert [p.name for p in (tmp_path / "a" / "e").iterdir()] == ["theirs.mgpu"]
