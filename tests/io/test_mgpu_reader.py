"""``medgpu.MgpuReader``: MONAI's LoadImage / LoadImaged read .mgpu streams directly
(random codec weights: geometry and plumbing, not quality)."""
from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
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


# ------------------------------------------------------------------------------ real-world values


def _load(path, codec, **kw):
    return LoadImage(reader=MgpuReader(codec=codec, device="cpu", **kw), dtype=None)(path)


def test_nifti_scaling_is_applied_and_the_header_is_in_the_meta_as_nibabel_reader_gives_it(tmp_path, codec):
    """MONAI's NibabelReader gives scl_slope * stored + scl_inter and the header fields; so must
    the stream of that file (else a swap of readers silently shifts every intensity)."""
    from monai.data import NibabelReader

    data = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 700).astype(np.int16)
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_slope_inter(0.5, -100.0)
    img.header.set_qform(AFFINE, code=1)
    nii, mgpu = tmp_path / "scaled.nii.gz", tmp_path / "scaled.mgpu"
    nib.save(img, str(nii))
    api.compress(nii, mgpu, gop=3, device="cpu", codec=codec)
    stored = api.decompress(mgpu, device="cpu", codec=codec).array
    assert stored.dtype == np.int16  # the Volume keeps the stored values (and the header) ...
    ours = _load(mgpu, codec)
    np.testing.assert_array_equal(ours.numpy(), stored * 0.5 - 100.0)  # ... the reader scales them
    ref = LoadImage(reader=NibabelReader(), dtype=None)(str(nii))
    assert ours.dtype == ref.dtype == torch.float64
    assert set(ref.meta) - set(ours.meta) <= {"as_closest_canonical", "original_pixdim"}
    for key in ("pixdim", "dim", "qform_code", "sform_code", "xyzt_units", "srow_x", "quatern_b", "datatype",
                "vox_offset"):
        np.testing.assert_array_equal(ours.meta[key], ref.meta[key], err_msg=key)
    assert np.isnan(ours.meta["scl_slope"]) and np.isnan(ref.meta["scl_slope"])  # already applied
    assert "descrip" not in ours.meta and "descrip" not in ref.meta  # text fields do not collate
    batch = list_data_collate([{"image": ours}, {"image": ours}])
    assert tuple(batch["image"].shape) == (2, *SHAPE)
    arr, _ = medgpu.decompress(mgpu, output="numpy", device="cpu", codec=codec)
    np.testing.assert_array_equal(arr, ours.numpy())
    part = _load(mgpu, codec, slice_range=(3, 5))  # the header follows the part
    assert list(part.meta["dim"][:4]) == [3, 18, 16, 2]
    np.testing.assert_allclose(part.meta["srow_x"], part.affine.numpy()[0], atol=1e-5)


def _series_with_per_slice_rescale(folder, rescale):
    """Slices of pydicom's CT_small.dcm, each with its own Rescale Slope/Intercept."""
    import copy

    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir()
    series = generate_uid()
    for k, (slope, inter) in enumerate(rescale):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.RescaleSlope, ds.RescaleIntercept = slope, inter
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    return base


def test_dicom_rescale_is_applied_per_slice_as_pydicom_reader_does(tmp_path, codec):
    rescale = [(1, -1024), (2, -1000), (1, -900), (0.5, 0)]
    _series_with_per_slice_rescale(tmp_path / "ct", rescale)
    mgpu = tmp_path / "ct.mgpu"
    api.compress(tmp_path / "ct", mgpu, gop=2, device="cpu", codec=codec)
    stored = api.decompress(mgpu, device="cpu", codec=codec).array
    assert stored.shape[2] == 4 and stored.dtype == np.int16
    ours = _load(mgpu, codec)
    assert ours.dtype == torch.float32  # as MONAI's PydicomReader
    for k, (slope, inter) in enumerate(rescale):
        np.testing.assert_allclose(ours.numpy()[:, :, k], stored[:, :, k] * slope + inter, rtol=1e-6)
    part = _load(mgpu, codec, slice_range=(1, 3))  # the rescale of slices 1 and 2, not of 0 and 1
    np.testing.assert_array_equal(part.numpy(), ours.numpy()[:, :, 1:3])


def test_dicom_series_wide_rescale(tmp_path, codec):
    _series_with_per_slice_rescale(tmp_path / "ct", [(1, -1024)] * 3)
    mgpu = tmp_path / "ct.mgpu"
    api.compress(tmp_path / "ct", mgpu, gop=3, device="cpu", codec=codec)
    stored = api.decompress(mgpu, device="cpu", codec=codec).array
    ours = _load(mgpu, codec)
    assert ours.dtype == torch.float32
    np.testing.assert_array_equal(ours.numpy(), stored.astype(np.float32) - 1024)


def test_a_single_dicom_image_comes_back_2d_as_pydicom_reader_gives_it(tmp_path, codec):
    from pydicom.data import get_testdata_file

    source = get_testdata_file("CT_small.dcm")
    mgpu = tmp_path / "one.mgpu"
    api.compress(source, mgpu, device="cpu", codec=codec)
    ours = _load(mgpu, codec)
    ref = LoadImage(reader="PydicomReader", dtype=None)(source)
    assert tuple(ours.shape) == tuple(ref.shape) == (128, 128)
    assert list(ours.meta["spatial_shape"]) == [128, 128]
    stored = api.decompress(mgpu, device="cpu", codec=codec).array  # the Volume stays X x Y x 1
    np.testing.assert_array_equal(ours.numpy(), stored[:, :, 0].astype(np.float32) - 1024)
    # a one-slice part of a series stays 3-D (MONAI reads the series as a volume)
    _series_with_per_slice_rescale(tmp_path / "ct", [(1, -1024)] * 3)
    api.compress(tmp_path / "ct", tmp_path / "ct.mgpu", gop=3, device="cpu", codec=codec)
    assert tuple(_load(tmp_path / "ct.mgpu", codec, slice_range=(1, 2)).shape) == (128, 128, 1)
