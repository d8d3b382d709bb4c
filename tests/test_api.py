"""medgpu.api end to end with the real codec (random weights: plumbing, not quality)."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgpu import api
from medgpu.bitstream.container import ContainerReader
from medgpu.codec import load_codec
from medgpu.errors import (
    CorruptStreamError,
    DeviceError,
    InputError,
    OptionError,
    OutputError,
    WeightsMismatchError,
)
from medgpu.volume import Volume

SHAPE = (16, 20, 7)  # slice axis 2 (largest spacing); gop 3 -> GoPs of 3, 3, 1 slices


def write_test_nifti(path: Path) -> Path:
    rng = np.random.default_rng(1)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    data = 800 * np.exp(-3 * (x**2 + y**2)) * (1 + 0.3 * z) - 200 + rng.normal(0, 5, SHAPE)
    affine = np.array([[0.9, 0, 0, -7], [0, 0.8, 0.1, -8], [0, 0, 2.5, 3], [0, 0, 0, 1]])
    img = nib.Nifti1Image(data.astype(np.int16), affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=2)
    img.header["descrip"] = b"medgpu api test"
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="module")
def codec():
    return load_codec(pretrained=False)


@pytest.fixture(scope="module")
def coded(tmp_path_factory, codec):
    """One compressed stream shared by the tests that only read it."""
    d = tmp_path_factory.mktemp("coded")
    src = write_test_nifti(d / "vol.nii.gz")
    stages: list[tuple[str, int, int]] = []
    report = api.compress(src, d / "vol.mgpu", gop=3, device="cpu", codec=codec,
                          progress=lambda *a: stages.append(a))
    return src, d / "vol.mgpu", report, stages


@pytest.fixture(scope="module")
def decoded(tmp_path_factory, coded, codec):
    _, stream, _, _ = coded
    out = tmp_path_factory.mktemp("decoded") / "vol.nii.gz"
    volume = api.decompress(stream, out, device="cpu", codec=codec)
    return out, volume


def test_report_from_the_written_file(coded):
    src, stream, report, stages = coded
    size = stream.stat().st_size
    assert report["bytes"] == size
    assert report["bits_per_voxel"] == pytest.approx(8 * size / np.prod(SHAPE))
    assert report["slice_axis"] == 2 and report["num_gops"] == 3
    assert len(report["psnr_per_slice"]) == SHAPE[2]
    assert np.isfinite(report["psnr"]) and report["encode_seconds"] > 0 and report["decode_seconds"] > 0
    assert stages == [(stage, i, 3) for stage in ("encoding", "verifying") for i in range(4)]
    side = json.loads(Path(str(stream) + ".json").read_text())
    assert side["report"]["bytes"] == size
    assert side["source_header"]["descrip"] == "medgpu api test"
    assert sorted(p.name for p in stream.parent.iterdir()) == ["vol.mgpu", "vol.mgpu.json", "vol.nii.gz"]


def test_info_psnr_equals_independent_computation(coded, decoded):
    src, stream, _, _ = coded
    out, _ = decoded
    a = np.asarray(nib.load(str(src)).dataobj).astype(np.float64)
    b = np.asarray(nib.load(str(out)).dataobj).astype(np.float64)
    peak = a.max() - a.min()
    expected = 10 * np.log10(peak**2 / np.mean((a - b) ** 2))
    per_slice = [10 * np.log10(peak**2 / np.mean((a[:, :, k] - b[:, :, k]) ** 2)) for k in range(a.shape[2])]
    meta = api.info(stream)
    assert meta["psnr"] == pytest.approx(expected, rel=1e-12)
    assert meta["report"]["psnr_per_slice"] == pytest.approx(per_slice, rel=1e-12)


def test_decompress_restores_the_nifti(coded, decoded):
    src, _, _, _ = coded
    out, volume = decoded
    a, b = nib.load(str(src)), nib.load(str(out))
    assert b.shape == a.shape and b.get_data_dtype() == a.get_data_dtype()
    np.testing.assert_array_equal(b.affine, a.affine)
    for key in ("sform_code", "qform_code", "descrip", "pixdim", "xyzt_units", "srow_x", "quatern_b"):
        np.testing.assert_array_equal(b.header[key], a.header[key], err_msg=key)
    assert volume.array.dtype == np.int16 and volume.path == str(out)


def test_info_without_sidecar(coded, tmp_path):
    _, stream, _, _ = coded
    lone = tmp_path / "lone.mgpu"
    lone.write_bytes(stream.read_bytes())
    meta = api.info(lone)
    assert meta["psnr"] is None and meta["sidecar"] is None
    assert meta["shape"] == list(SHAPE) and meta["num_gops"] == 3 and meta["bytes"] == stream.stat().st_size


def test_decode_slices_reads_only_its_gops(coded, decoded, codec, monkeypatch):
    _, stream, _, _ = coded
    _, volume = decoded
    read: list[int] = []
    original = ContainerReader.read_packet

    def spy(self, i):
        read.append(i)
        return original(self, i)

    monkeypatch.setattr(ContainerReader, "read_packet", spy)
    part = api.decode_slices(stream, 3, 5, device="cpu", codec=codec)
    assert read == [1]
    np.testing.assert_array_equal(part, volume.array[:, :, 3:5])
    with pytest.raises(OptionError, match="slice range"):
        api.decode_slices(stream, 5, 9, codec=codec)


def test_other_weights_are_refused(coded, codec):
    _, stream, _, _ = coded
    other = copy.copy(codec)
    other.weights_hash = bytes(32)
    with pytest.raises(WeightsMismatchError, match="weights"):
        api.decompress(stream, codec=other)
    with pytest.raises(WeightsMismatchError):  # the shipped weights are not the random ones
        api.decompress(stream, device="cpu")


def test_decode_is_bit_identical_in_another_process_and_thread_count(coded, codec, tmp_path):
    _, stream, _, _ = coded
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        here = api.decompress(stream, device="cpu", codec=codec).array
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "there.npy"
    script = textwrap.dedent(f"""
        import numpy as np, torch
        torch.set_num_threads(1)
        from medgpu import api
        from medgpu.codec import load_codec
        v = api.decompress({str(stream)!r}, device="cpu", codec=load_codec(pretrained=False))
        np.save({str(out)!r}, v.array)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    there = np.load(out)
    assert there.dtype == here.dtype
    np.testing.assert_array_equal(there, here)


def test_4d_float_volume_round_trip(tmp_path, codec):
    rng = np.random.default_rng(2)
    array = rng.normal(100, 20, size=(8, 9, 3, 2)).astype(np.float32)
    vol = Volume(array, np.diag([1.0, 1.0, 3.0, 1.0]))
    report = api.compress(vol, tmp_path / "f.mgpu", gop=2, device="cpu", codec=codec)
    assert report["num_gops"] == 4 and len(report["psnr_per_slice"]) == 3
    back = api.decompress(tmp_path / "f.mgpu", device="cpu", codec=codec)
    assert back.array.shape == array.shape and back.array.dtype == np.float32
    assert back.spacing == vol.spacing
    np.testing.assert_array_equal(api.decode_slices(tmp_path / "f.mgpu", 2, 3, codec=codec), back.array[:, :, 2:3])


def test_failure_leaves_no_file(coded, codec, tmp_path):
    src, _, _, _ = coded
    broken = copy.copy(codec)
    calls = []

    def encode_then_fail(frames, quality, on_frame=None, inter=None):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return codec.encode_gop(frames, quality, on_frame=on_frame, inter=inter)

    broken.encode_gop = encode_then_fail
    with pytest.raises(RuntimeError):
        api.compress(src, tmp_path / "x.mgpu", gop=3, device="cpu", codec=broken)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept(coded, codec, tmp_path):
    src, _, _, _ = coded
    target = tmp_path / "x.mgpu"
    target.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="exists"):
        api.compress(src, target, codec=codec)
    assert target.read_bytes() == b"keep me"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"quality": 64}, "quality"),
        ({"quality": -1}, "quality"),
        ({"quality": 2.5}, "quality"),
        ({"gop": 0}, "gop"),
        ({"slice_axis": 3}, "slice-axis"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_options(coded, codec, tmp_path, options, match):
    src, _, _, _ = coded
    with pytest.raises(OptionError, match=match):
        api.compress(src, tmp_path / "x.mgpu", codec=codec, **{"device": "cpu", **options})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_missing():
    with pytest.raises(DeviceError, match="CUDA"):
        api.resolve_device("cuda")
    assert api.resolve_device("auto") == "cpu"


def test_bad_inputs(tmp_path, codec):
    with pytest.raises(InputError, match="no such file"):
        api.compress(tmp_path / "none.nii.gz", codec=codec)
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    with pytest.raises(InputError, match="notes.nii.gz"):
        api.compress(text, codec=codec)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty"):  # a folder is read as a DICOM series
        api.compress(empty, tmp_path / "dir.mgpu", codec=codec)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "notes.nii.gz"]


def test_damaged_stream(coded, tmp_path, codec):
    _, stream, _, _ = coded
    data = bytearray(stream.read_bytes())
    data[-40] ^= 0x01  # inside the last packet or the index
    bad = tmp_path / "bad.mgpu"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptStreamError):
        api.decompress(bad, tmp_path / "bad.nii.gz", codec=codec)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mgpu"]


def test_default_paths():
    assert api.default_stream_path("/d/ct.nii.gz") == Path("/d/ct.mgpu")
    assert api.default_stream_path("/d/ct.nii") == Path("/d/ct.mgpu")
    assert api.default_nifti_path("/d/ct.mgpu") == Path("/d/ct.nii.gz")


def test_dicom_input(tmp_path, codec):
    from pydicom.data import get_testdata_file

    src = get_testdata_file("MR_small.dcm")  # ships with pydicom: 64x64 int16, one slice
    report = api.compress(src, tmp_path / "mr.mgpu", device="cpu", codec=codec)
    side = json.loads((tmp_path / "mr.mgpu.json").read_text())
    assert side["volume"]["source_format"] == "dicom" and "dicom" in side["source_header"]
    back = api.decompress(tmp_path / "mr.mgpu", tmp_path / "mr.nii.gz", device="cpu", codec=codec)
    assert back.array.shape == (64, 64, 1) and back.array.dtype == np.int16
    assert nib.load(str(tmp_path / "mr.nii.gz")).shape == (64, 64, 1)
    assert api.info(tmp_path / "mr.mgpu")["psnr"] == report["psnr"]


def test_2d_image_round_trip(tmp_path, codec):
    """A 2-D NIfTI is one slice: it compresses and decodes back to 2-D with its affine."""
    rng = np.random.default_rng(5)
    array = (np.add.outer(np.arange(40), np.arange(36)) * 10 + rng.integers(0, 20, (40, 36))).astype(np.int16)
    affine = np.diag([0.5, 0.6, 1.0, 1.0])
    nib.save(nib.Nifti1Image(array, affine), str(tmp_path / "two.nii.gz"))
    report = api.compress(tmp_path / "two.nii.gz", tmp_path / "two.mgpu", device="cpu", codec=codec)
    assert report["num_gops"] == 1
    api.decompress(tmp_path / "two.mgpu", tmp_path / "back.nii.gz", device="cpu", codec=codec)
    back = nib.load(str(tmp_path / "back.nii.gz"))
    assert back.shape == (40, 36) and back.get_data_dtype() == np.int16
    np.testing.assert_allclose(back.affine, affine)
