"""The .mgpu.json sidecar: strict JSON, non-finite PSNR round trip, clear errors."""
from __future__ import annotations

import json
import math

import pytest

from medgpu.bitstream.container import StreamHeader
from medgpu.bitstream.sidecar import build_sidecar, read_sidecar, sidecar_path, write_sidecar
from medgpu.errors import FormatError, InputError


def header() -> StreamHeader:
    return StreamHeader(
        codec_id="c",
        weights_hash=b"\xab" * 32,
        quality=3,
        shape=(4, 5, 6),
        dtype="<u2",
        slice_axis=2,
        plan={},
        intensity={"kind": "linear"},
        volume={"spacing": [1.0, 1.0, 2.5], "header": {"qform_code": 1, "descrip": "x"}},
    )


def test_round_trip_with_infinite_psnr(tmp_path):
    report = {"psnr": 51.5, "psnr_per_slice": [math.inf, 40.0], "bits_per_voxel": 0.5}
    doc = build_sidecar(header(), report, "v.mgpu")
    path = tmp_path / "v.mgpu.json"
    write_sidecar(path, doc)
    json.loads(path.read_text(), parse_constant=pytest.fail)  # strict JSON: no Infinity
    back = read_sidecar(path)
    assert back["report"]["psnr_per_slice"] == [math.inf, 40.0]
    assert back["source_header"] == {"qform_code": 1, "descrip": "x"}
    assert back["codec"]["weights_sha256"] == "ab" * 32
    assert back["volume"]["shape"] == [4, 5, 6] and back["volume"]["spacing"] == [1.0, 1.0, 2.5]


def test_sidecar_path():
    assert sidecar_path("/a/b/v.mgpu").name == "v.mgpu.json"


def test_errors(tmp_path):
    with pytest.raises(InputError):
        read_sidecar(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FormatError):
        read_sidecar(bad)
    bad.write_text("{}")
    with pytest.raises(FormatError, match="not a medgpu sidecar"):
        read_sidecar(bad)
