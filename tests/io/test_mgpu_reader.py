"""``medgpu.MgpuReader``: MONAI's LoadImage / LoadImaged read .mgpu streams directly
(random codec weights: geometry and plumbing, not quality)."""
from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImage, LoadImaged, Spacingd

import medgpu
from medgpu import api
from medgpu.codec import load_codec
from medgpu.errors import InputError
from medgpu.io.mgpu_reader import MgpuReader, register_mgpu_reader

SHAPE = (18, 16, 9)
PIXDIM = (0.9, 0.8, 2.5)
AFFINE = np.array([[0.0, -0.8, 0, 12.0], [0.9, 0, 0, -8.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1]])  # rotated in-plane


@pytest.fixture(scope="module")
def codec():
    return load_codec(pretrained=False)


@pytest.fixture(scope="module")
def stream(tmp_path_factory, codec):
    """(nifti path, .mgpu path): a NIfTI with a rotated affine and its stream, GoPs of 3 slices."""
    d = tmp_path_factory.mktemp("reader")
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    data = (900 * np.exp(-3 * (x**2 + y**2)) * (1 + 0.3 * z) - 100).astype(np.int16)
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_sform(AFFINE, code=2)
    img.header.set_qform(AFFINE, code=1)
    nii = d / "ct.nii.gz"
    nib.save(img, str(nii))
    mgpu = d / "ct.mgpu"
    api.compress(nii, mgpu, gop=3, device="cpu", codec=codec)
    return nii, mgpu


def test_verify_suffix():
    r = MgpuReader()
    assert r.verify_suffix("a/ct.mgpu") and r.verify_suffix(["a.mgpu", "b.MGPU"])
    assert not r.verify_suffix("ct.nii.gz") and not r.verify_suffix(["a.mgpu", "b.nii"])


def test_load_image_returns_the_decoded_volume_and_monai_meta(stream, codec):
    nii, mgpu = stream
    img = LoadImage(reader=medgpu.MgpuReader, codec=codec, device="cpu", dtype=None)(mgpu)
    assert isinstance(img, MetaTensor) and tuple(img.shape) == SHAPE and img.dtype == torch.int16
    np.testing.assert_array_equal(img.numpy(), api.decompress(mgpu, device="cpu", codec=codec).array)
    np.testing.assert_allclose(img.affine.numpy(), nib.load(str(nii)).affine)
    np.testing.assert_allclose(img.meta["original_affine"], nib.load(str(nii)).affine)
    assert list(img.meta["spatial_shape"]) == list(SHAPE)
    assert math.isnan(img.meta["original_channel_dim"])
    assert img.meta["space"] == "RAS" and img.meta["filename_or_obj"] == str(mgpu)
    assert img.meta["mgpu_codec_id"] == codec.codec_id and img.meta["slice_axis"] == 2
    assert list(img.meta["slice_range"]) == [0, SHAPE[2]]


def test_compose_with_spacing_matches_the_nifti_pipeline(stream, codec):
    """Done-when of the issue: LoadImaged(reader=MgpuReader) + EnsureChannelFirstd + Spacingd
    give the decoded volume with the affine (and grid) of the original NIfTI."""
    nii, mgpu = stream

    def pipeline(**reader):
        return Compose([LoadImaged(keys="image", **reader), EnsureChannelFirstd(keys="image"),
                        Spacingd(keys="image", pixdim=PIXDIM)])

    ours = pipeline(reader=medgpu.MgpuReader, codec=codec, device="cpu")({"image": str(mgpu)})["image"]
    ref = pipeline(reader="NibabelReader")({"image": str(nii)})["image"]
    assert tuple(ours.shape) == tuple(ref.shape) == (1, *SHAPE)
    np.testing.assert_allclose(ours.affine.numpy(), ref.affine.numpy(), atol=1e-6)
    np.testing.assert_allclose(ours.affine.numpy(), AFFINE, atol=1e-6)
    decoded = api.decompress(mgpu, device="cpu", codec=codec).array.astype(np.float32)
    np.testing.assert_allclose(ours[0].numpy(), decoded, atol=1e-3)


def test_slice_range_decodes_only_the_needed_gops(stream, codec, monkeypatch):
    _, mgpu = stream
    calls = []
    original = codec.decode_gop
    monkeypatch.setattr(codec, "decode_gop", lambda *a, **k: calls.append(a[1]) or original(*a, **k))
    part = LoadImage(reader=MgpuReader(slice_range=(4, 6), codec=codec, device="cpu"), dtype=None)(mgpu)
    assert len(calls) == 1  # slices 4:6 lie in GoP 1 (slices 3..5)
    calls.clear()
    full = LoadImage(reader=MgpuReader(codec=codec, device="cpu"), dtype=None)(mgpu)
    assert len(calls) == 3
    np.testing.assert_array_equal(part.numpy(), full.numpy()[:, :, 4:6])
    np.testing.assert_allclose(part.affine.numpy()[:3, 3], AFFINE[:3, 3] + 4 * AFFINE[:3, 2])
    assert list(part.meta["slice_range"]) == [4, 6] and list(part.meta["spatial_shape"]) == [18, 16, 2]


def test_several_files_stack_as_channels(stream, codec):
    _, mgpu = stream
    img = LoadImage(reader=MgpuReader(codec=codec, device="cpu"))([mgpu, mgpu])
    assert tuple(img.shape) == (2, *SHAPE) and img.meta["original_channel_dim"] == 0


def test_errors(tmp_path, stream):
    with pytest.raises(InputError):
        MgpuReader().read(tmp_path / "missing.mgpu")
    with pytest.raises(TypeError):
        MgpuReader().read(stream[1], mmap=True)
    with pytest.raises(TypeError):  # LoadImage relies on this to skip readers that do not take its kwargs
        MgpuReader(as_closest_canonical=True)  # type: ignore[call-arg]


def test_register_makes_load_image_pick_it(monkeypatch):
    from monai.transforms.io import array as io_array

    monkeypatch.setattr(io_array, "SUPPORTED_READERS", dict(io_array.SUPPORTED_READERS))
    register_mgpu_reader()
    readers = [r for r in LoadImage().readers if isinstance(r, MgpuReader)]
    assert len(readers) == 1 and readers[0].verify_suffix("x.mgpu")


def test_shipped_weights_in_a_plain_pipeline(stream):
    """The issue's pipeline verbatim (the shipped codec, loaded by the reader)."""
    nii, mgpu = stream
    fresh = mgpu.with_name("shipped.mgpu")
    api.compress(nii, fresh, device="cpu", overwrite=True)
    ours = Compose([LoadImaged(keys="image", reader=medgpu.MgpuReader), EnsureChannelFirstd(keys="image"),
                    Spacingd(keys="image", pixdim=PIXDIM)])({"image": str(fresh)})["image"]
    original = np.asarray(nib.load(str(nii)).dataobj, dtype=np.float64)
    np.testing.assert_allclose(ours.affine.numpy(), AFFINE, atol=1e-6)
    mse = float(np.mean((ours[0].numpy().astype(np.float64) - original) ** 2))
    assert 10 * np.log10(np.ptp(original) ** 2 / mse) > 30
