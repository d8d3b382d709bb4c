"""Arrays / tensors / MetaTensors <-> Volume, and the in-memory ``medgpu.compress`` /
``medgpu.decompress`` (random codec weights: plumbing, not quality)."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

import medgpu
from medgpu import convert
from medgpu.codec import load_codec
from medgpu.errors import OptionError
from medgpu.volume import Volume

AFFINE = np.array([[0.9, 0, 0, -7.0], [0, 0.8, 0, -8.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def codec():
    return load_codec(pretrained=False)


def ramp(shape=(12, 10, 7), dtype=np.int16) -> np.ndarray:
    return (np.arange(int(np.prod(shape))) % 997).reshape(shape).astype(dtype)


# ------------------------------------------------------------------------------ package


def test_import_is_lazy_and_exposes_the_api():
    code = ("import sys, medgpu; print([m for m in ('torch', 'monai', 'numpy', 'nibabel') if m in sys.modules]); "
            "print(sorted(n for n in ('compress', 'decompress', 'info', 'MgpuReader', 'MgpuRoundTripd') "
            "if n in dir(medgpu)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == str(sorted(["compress", "decompress", "info", "MgpuReader", "MgpuRoundTripd"]))
    assert medgpu.compress is convert.compress and medgpu.decompress is convert.decompress
    assert medgpu.info is medgpu.api.info and medgpu.Volume is Volume
    assert callable(medgpu.bench.run_bench)
    with pytest.raises(AttributeError):
        medgpu.no_such_thing  # noqa: B018


# ------------------------------------------------------------------------------ to_volume


def test_numpy_and_torch_are_spatial_first_with_the_given_affine():
    a = ramp()
    v = convert.to_volume(a, AFFINE)
    assert v.shape == a.shape and v.dtype == np.int16 and v.source_format == "array"
    np.testing.assert_array_equal(v.affine, AFFINE)
    assert v.spacing == pytest.approx((0.9, 0.8, 2.5))
    t = convert.to_volume(torch.from_numpy(a), torch.from_numpy(AFFINE))
    np.testing.assert_array_equal(t.array, a)
    np.testing.assert_array_equal(t.affine, AFFINE)
    np.testing.assert_array_equal(convert.to_volume(a).affine, np.eye(4))


def test_metatensor_channel_first_and_no_channel():
    a = ramp().astype(np.float32)
    mt = MetaTensor(torch.from_numpy(a)[None], affine=torch.from_numpy(AFFINE),
                    meta={"spatial_shape": np.array(a.shape), "filename_or_obj": "/x/ct.nii.gz"})
    v = convert.to_volume(mt)
    assert v.shape == a.shape and v.path == "/x/ct.nii.gz"
    np.testing.assert_array_equal(v.affine, AFFINE)
    # as LoadImage returns it (no channel): spatial_shape has as many entries as axes
    plain = MetaTensor(torch.from_numpy(a), affine=torch.from_numpy(AFFINE), meta={"spatial_shape": np.array(a.shape)})
    assert convert.to_volume(plain).shape == a.shape
    # several channels become the extra axes; a 2-D image with channels gets a singleton z
    two = MetaTensor(torch.stack([torch.from_numpy(a), torch.from_numpy(a) + 1]), affine=torch.from_numpy(AFFINE))
    assert convert.to_volume(two).shape == a.shape + (2,)
    img2d = MetaTensor(torch.zeros(3, 8, 9), affine=torch.eye(3))
    assert convert.to_volume(img2d).shape == (8, 9, 1, 3)
    # explicit channel_dim on plain arrays
    assert convert.to_volume(np.zeros((8, 9, 5, 1)), channel_dim=-1).shape == (8, 9, 5)


def test_2d_affine_is_embedded():
    a2 = np.array([[0.5, 0, 10.0], [0, 0.7, -3.0], [0, 0, 1]])
    v = convert.to_volume(np.zeros((6, 5)), a2)
    np.testing.assert_array_equal(v.affine, [[0.5, 0, 0, 10], [0, 0.7, 0, -3], [0, 0, 1, 0], [0, 0, 0, 1]])


@pytest.mark.parametrize("bad", [
    dict(data=np.zeros(5)), dict(data=np.zeros((4, 4)), affine=np.eye(2)),
    dict(data=np.array([["a"]])), dict(data=np.zeros((4, 4, 4)), channel_dim=3), dict(data="x.nii"),
    dict(data=np.zeros((4, 4, 4)), affine=np.eye(3)),  # a 3x3 affine is for 2-D data only
])  # fmt: skip
def test_to_volume_rejects(bad):
    with pytest.raises(OptionError):
        convert.to_volume(**bad)


def test_from_volume_outputs():
    v = Volume(ramp(), AFFINE, path="/x/ct.mgpu")
    arr, aff = convert.from_volume(v, "numpy")
    assert arr is v.array and np.array_equal(aff, AFFINE)
    t, taff = convert.from_volume(v, "torch", channel_first=True)
    assert tuple(t.shape) == (1, 12, 10, 7) and taff.dtype == torch.float64
    mt = convert.from_volume(v)
    assert isinstance(mt, MetaTensor) and tuple(mt.shape) == (12, 10, 7)
    np.testing.assert_array_equal(mt.affine.numpy(), AFFINE)
    assert math.isnan(mt.meta["original_channel_dim"]) and mt.meta["space"] == "RAS"
    assert list(mt.meta["spatial_shape"]) == [12, 10, 7] and mt.meta["filename_or_obj"] == "/x/ct.mgpu"
    four = convert.from_volume(Volume(np.zeros((4, 5, 6, 3)), AFFINE), channel_first=True)
    assert tuple(four.shape) == (3, 4, 5, 6) and four.meta["original_channel_dim"] == -1
    assert convert.from_volume(v, "volume") is v
    with pytest.raises(OptionError):
        convert.from_volume(v, "pandas")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ compress / decompress


def test_array_round_trip_through_files_and_bytes(tmp_path, codec):
    a = ramp()
    out = tmp_path / "a.mgpu"
    report = medgpu.compress(a, out, affine=AFFINE, gop=3, device="cpu", codec=codec)
    assert out.is_file() and report["bytes"] == out.stat().st_size
    arr, aff = medgpu.decompress(out, output="numpy", device="cpu", codec=codec)
    assert arr.shape == a.shape and arr.dtype == a.dtype
    np.testing.assert_array_equal(aff, AFFINE)
    data, rep = medgpu.compress_to_bytes(torch.from_numpy(a), affine=AFFINE, gop=3, device="cpu", codec=codec)
    assert data == out.read_bytes() and rep["bytes"] == len(data) and "stream" not in rep
    mt = medgpu.decompress(data, output="metatensor", device="cpu", codec=codec)
    np.testing.assert_array_equal(mt.numpy(), arr)
    np.testing.assert_array_equal(mt.affine.numpy(), AFFINE)
    # a MetaTensor carries its affine
    again = medgpu.compress(mt, tmp_path / "b.mgpu", gop=3, device="cpu", codec=codec)
    assert again["bytes"] > 0
    np.testing.assert_array_equal(medgpu.decompress(tmp_path / "b.mgpu", codec=codec, device="cpu").affine, AFFINE)


def test_slice_range_decodes_part_and_shifts_the_affine(tmp_path, codec):
    out = tmp_path / "a.mgpu"
    medgpu.compress(ramp(), out, affine=AFFINE, gop=3, device="cpu", codec=codec)
    full = medgpu.decompress(out, device="cpu", codec=codec)
    part = medgpu.decompress(out, slice_range=(4, 6), device="cpu", codec=codec)
    np.testing.assert_array_equal(part.array, full.array[:, :, 4:6])
    np.testing.assert_allclose(part.affine[:3, 3], AFFINE[:3, 3] + 4 * AFFINE[:3, 2])
    with pytest.raises(OptionError):
        medgpu.decompress(out, tmp_path / "x.nii.gz", slice_range=(0, 2), codec=codec)


def test_nested_lists_are_arrays(tmp_path, codec):
    data = ramp().tolist()
    medgpu.compress(data, tmp_path / "l.mgpu", gop=3, device="cpu", codec=codec)
    back = medgpu.decompress(tmp_path / "l.mgpu", codec=codec)  # a Volume
    assert back.array.shape == np.asarray(data).shape and back.array.dtype == np.asarray(data).dtype


def test_misuse_is_an_option_error(tmp_path, codec):
    with pytest.raises(OptionError, match="output path"):
        medgpu.compress(ramp(), gop=3, device="cpu", codec=codec)
    with pytest.raises(OptionError, match="affine"):
        medgpu.compress(tmp_path / "x.nii.gz", affine=AFFINE, codec=codec)
    with pytest.raises(OptionError):
        medgpu.decompress(tmp_path / "x.mgpu", output="list")  # type: ignore[arg-type]
