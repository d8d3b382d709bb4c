"""DICOM reading and writing: series order, geometry, multi-frame, colour, JSON model, new series."""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from dicom_support import write_enhanced_mr  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from medgpu.io import (  # noqa: E402
    dataset_from_json,
    dataset_to_json,
    instance_json,
    load_dicom,
    load_volume,
    save_dicom,
    save_volume,
)
from medgpu.volume import Volume  # noqa: E402

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _sample(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name, download=False)
    if path is None:  # pragma: no cover - pydicom ships these files
        pytest.skip(f"pydicom test file {name} not available offline")
    return str(path)


def _rotation_x(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _ct_series(folder: Path, n: int = 40, *, reverse_numbers: bool = False, seed: int = 0) -> dict:
    """``n`` CT slices made from CT_small.dcm, oblique, with shuffled file names and a private tag."""
    base = pydicom.dcmread(_sample("CT_small.dcm"))
    rot = _rotation_x(20.0)
    row, col = rot @ [1.0, 0, 0], rot @ [0, 1.0, 0]
    normal = np.cross(row, col)
    origin = np.array([-158.1, -179.0, -75.7])
    step = 2.5
    series, rng = generate_uid(), np.random.default_rng(seed)
    pixels = base.pixel_array
    names = [f"img_{k:03d}.dcm" for k in rng.permutation(n)]  # file order is not slice order
    slices = []
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n - k if reverse_numbers else k + 1
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in origin + k * step * normal]
        ds.SliceLocation = f"{k * step:.2f}"
        ds.private_block(0x0011, "MEDGPU TEST", create=True).add_new(0x01, "LO", f"slice {k}")
        frame = (pixels + 7 * k).astype(np.int16)
        ds.PixelData = frame.tobytes()
        ds.save_as(folder / names[k], enforce_file_format=True)
        slices.append(frame)
    ps = [float(v) for v in base.PixelSpacing]
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row * ps[1], col * ps[0]
    lps[:3, 2], lps[:3, 3] = normal * step, origin
    return {"slices": slices, "affine": LPS_TO_RAS @ lps, "base": base, "series": series}


def _sitk_affine(image) -> np.ndarray:
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ lps


# ----------------------------------------------------------------------------- series


def test_series_order_affine_and_round_trip(tmp_path: Path) -> None:
    import SimpleITK as sitk

    src = _ct_series(tmp_path / "in")
    vol = load_volume(tmp_path / "in")
    assert vol.source_format == "dicom" and vol.shape == (128, 128, 40) and vol.dtype == np.int16
    for k in (0, 17, 39):
        assert np.array_equal(vol.array[:, :, k], src["slices"][k].T)
    np.testing.assert_allclose(vol.affine, src["affine"], atol=1e-3)
    assert vol.header["dicom"]["geometry"] == "regular"
    assert (vol.header["scl_slope"], vol.header["scl_inter"]) == (1.0, -1024.0)
    assert vol.value_scaling == (1.0, -1024.0)
    json.dumps(vol.header, allow_nan=False)

    files = save_dicom(vol, tmp_path / "out", lossy_ratio=12.5)
    assert len(files) == 40 and all(f.parent == tmp_path / "out" for f in files)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # temp folder renamed
    originals = {pydicom.dcmread(f).SOPInstanceUID for f in (tmp_path / "in").iterdir()}
    written = [pydicom.dcmread(f) for f in files]
    src_ds = pydicom.dcmread(next((tmp_path / "in").iterdir()), stop_before_pixels=True)
    new_series = {ds.SeriesInstanceUID for ds in written}
    assert len(new_series) == 1 and src["series"] not in new_series
    assert len({ds.SOPInstanceUID for ds in written}) == 40 and not originals & {ds.SOPInstanceUID for ds in written}
    by_number = sorted(written, key=lambda d: int(d.InstanceNumber))
    sources = sorted((pydicom.dcmread(f, stop_before_pixels=True) for f in (tmp_path / "in").iterdir()),
                     key=lambda d: int(d.InstanceNumber))
    for k, (ds, ref) in enumerate(zip(by_number, sources)):
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for kw in ("PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "StudyDate", "Modality"):
            assert ds.get(kw) == src_ds.get(kw), kw
        for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            assert [float(v) for v in ds.get(kw)] == [float(v) for v in ref.get(kw)], kw
        assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 16, 1)
        assert ds.LossyImageCompression == "01"
        assert float(ds.LossyImageCompressionRatio) == 12.5 and ds.LossyImageCompressionMethod == "MEDGPU"
        assert ds.private_block(0x0011, "MEDGPU TEST")[0x01].value == f"slice {k}"  # private tag kept
        assert np.array_equal(ds.pixel_array, src["slices"][k])

    back = load_volume(tmp_path / "out")
    assert np.array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-6)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "out")))
    image = reader.Execute()
    real = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float64)
    slope, inter = vol.value_scaling
    assert np.array_equal(real, vol.array * slope + inter)
    np.testing.assert_allclose(_sitk_affine(image), vol.affine, atol=1e-3)


def test_position_beats_instance_number(tmp_path: Path) -> None:
    src = _ct_series(tmp_path / "in", n=6, reverse_numbers=True)
    vol = load_dicom(tmp_path / "in")
    assert [np.array_equal(vol.array[:, :, k], s.T) for k, s in enumerate(src["slices"])] == [True] * 6


def test_missing_positions_fall_back_to_instance_number(tmp_path: Path) -> None:
    src = _ct_series(tmp_path / "in", n=5, reverse_numbers=True)
    for f in (tmp_path / "in").iterdir():
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f)
    vol = load_dicom(tmp_path / "in")
    assert vol.header["dicom"]["geometry"] == "none"
    assert np.array_equal(vol.array[:, :, 0], src["slices"][4].T)  # instance number 1 is the last slice


def test_several_series_need_a_choice(tmp_path: Path) -> None:
    a = _ct_series(tmp_path / "mixed", n=3, seed=1)
    _ct_series(tmp_path / "other", n=2, seed=2)
    for f in (tmp_path / "other").iterdir():
        f.rename(tmp_path / "mixed" / f"b_{f.name}")
    (tmp_path / "mixed" / "notes.txt").write_text("not DICOM")
    with pytest.raises(ValueError, match="holds 2 series.*series_uid"):
        load_volume(tmp_path / "mixed")
    vol = load_volume(tmp_path / "mixed", series_uid=a["series"])
    assert vol.shape == (128, 128, 3)
    with pytest.raises(ValueError, match="no series"):
        load_dicom(tmp_path / "mixed", series_uid="1.2.3")


# ----------------------------------------------------------------------------- single files


def test_single_file_and_rle() -> None:
    plain = load_volume(_sample("MR_small.dcm"))
    rle = load_volume(_sample("MR_small_RLE.dcm"))
    assert plain.shape == (64, 64, 1) and plain.dtype == np.int16
    assert np.array_equal(plain.array, rle.array)
    assert plain.header["dicom"]["transfer_syntaxes"] == ["1.2.840.10008.1.2.1"]
    assert rle.header["dicom"]["transfer_syntaxes"] == ["1.2.840.10008.1.2.5"]
    assert plain.spacing == pytest.approx((0.3125, 0.3125, 0.8))


def test_enhanced_multiframe_sorted_and_written_back(tmp_path: Path) -> None:
    src = write_enhanced_mr(tmp_path / "emr.dcm", _sample("MR_small.dcm"))
    vol = load_volume(tmp_path / "emr.dcm")
    assert vol.shape == (64, 64, 6) and vol.header["dicom"]["geometry"] == "regular"
    for k in range(6):  # ascending along the normal: the last stored frame first
        assert np.array_equal(vol.array[:, :, k], src["frames"][5 - k].T)
    assert vol.value_scaling == (2.0, -10.0)
    expected = LPS_TO_RAS @ np.array([[0.4, 0, 0, 10.0], [0, 0.5, 0, 20.0], [0, 0, 1.5, 30.0 - 7.5], [0, 0, 0, 1]])
    np.testing.assert_allclose(vol.affine, expected, atol=1e-9)

    files = save_volume(vol, tmp_path / "out")
    assert len(files) == 1
    ds = pydicom.dcmread(files[0])
    assert int(ds.NumberOfFrames) == 6 and "LossyImageCompressionRatio" not in ds
    assert np.array_equal(ds.pixel_array, np.stack(src["frames"]))  # original frame order
    pos = [float(it.PlanePositionSequence[0].ImagePositionPatient[2]) for it in ds.PerFrameFunctionalGroupsSequence]
    assert pos == [30.0 - 1.5 * f for f in range(6)]


def test_ultrasound_palette_becomes_grey(tmp_path: Path) -> None:
    from pydicom.pixels import apply_color_lut

    path = _sample("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    vol = load_volume(path)
    assert vol.header["converted_to_grey"] == "BT.601 luma of PALETTE COLOR" and vol.dtype == np.uint8
    rgb = apply_color_lut(ds.pixel_array, ds).astype(np.float64) / 256.0
    luma = np.rint(rgb @ [0.299, 0.587, 0.114])
    assert np.abs(vol.array[:, :, 0].T.astype(float) - luma).max() <= 1
    files = save_dicom(vol, tmp_path / "out")
    out = pydicom.dcmread(files[0])
    assert out.PhotometricInterpretation == "MONOCHROME2" and "RedPaletteColorLookupTableData" not in out
    assert out.BitsAllocated == 8 and np.array_equal(out.pixel_array, vol.array[:, :, 0].T)


def test_rgb_multiframe_rle_becomes_grey(tmp_path: Path) -> None:
    path = _sample("SC_rgb_rle_2frame.dcm")
    rgb = pydicom.dcmread(path).pixel_array.astype(np.float64)
    vol = load_volume(path)
    assert vol.shape == (100, 100, 2) and vol.header["converted_to_grey"] == "BT.601 luma of RGB"
    assert np.array_equal(vol.array.transpose(2, 1, 0), np.rint(rgb @ [0.299, 0.587, 0.114]).astype(np.uint8))
    out = pydicom.dcmread(save_dicom(vol, tmp_path / "out")[0])
    assert out.SamplesPerPixel == 1 and "PlanarConfiguration" not in out and int(out.NumberOfFrames) == 2


# ----------------------------------------------------------------------------- JSON model


def test_json_model_round_trip_with_private_tag() -> None:
    ds = pydicom.dcmread(_sample("CT_small.dcm"))
    dropped: list[str] = []
    values = json.loads(json.dumps(dataset_to_json(ds, dropped=dropped)))
    assert "7FE00010" not in values and values["00090010"]["Value"] == ["GEMS_IDEN_01"]
    back = dataset_from_json(values)
    for elem in ds:
        if elem.tag in (0x7FE00010, 0xFFFCFFFC):
            continue
        assert back[elem.tag].value == elem.value, elem
    assert back[0x0009, 0x1001].value == "GE_GENESIS_FF"
    with pytest.raises(ValueError, match="BulkDataURI"):
        dataset_from_json({"00091010": {"vr": "OB", "BulkDataURI": "file:///etc/passwd"}})


def test_big_binary_dropped_small_inline() -> None:
    ds = pydicom.dcmread(_sample("MR_small.dcm"))
    ds.add_new(0x00291010, "OB", b"\x01" * 10)
    ds.add_new(0x00291020, "OB", b"\x02" * 5000)
    ds.private_block(0x0029, "TEST", create=True)
    dropped: list[str] = []
    values = dataset_to_json(ds, bulk_limit=1000, dropped=dropped)
    assert "InlineBinary" in values["00291010"] and "00291020" not in values
    assert any(d.startswith("00291020") for d in dropped)


def test_shared_attributes_factored(tmp_path: Path) -> None:
    _ct_series(tmp_path / "in", n=3)
    vol = load_dicom(tmp_path / "in")
    dicom = vol.header["dicom"]
    assert "00100010" in dicom["shared"] and "00200032" not in dicom["shared"]
    full = instance_json(vol.header, 1)
    assert "00100010" in full and "00200032" in full and "00080018" in full


# ----------------------------------------------------------------------------- writing


def test_nifti_volume_written_as_secondary_capture(tmp_path: Path) -> None:
    rot = np.eye(4)
    rot[:3, :3] = _rotation_x(15.0) @ np.diag([0.8, 0.9, 2.5])
    rot[:3, 3] = [-20.0, 15.0, 7.0]
    array = (np.arange(6 * 5 * 4).reshape(6, 5, 4) * 37 - 300).astype(np.int16)
    vol = Volume(array, rot, source_format="nifti", header={"scl_slope": 0.5, "scl_inter": 3.0, "descrip": "test"})
    files = save_volume(vol, tmp_path / "sc", fmt="dicom")
    assert len(files) == 4
    back = load_volume(tmp_path / "sc")
    assert np.array_equal(back.array, array) and back.value_scaling == (0.5, 3.0)
    np.testing.assert_allclose(back.affine, rot, atol=1e-6)
    with pytest.raises(ValueError, match="integer"):
        save_dicom(Volume(np.zeros((4, 4, 2), np.float32)), tmp_path / "f")


def test_dicom_to_nifti_keeps_scaling_and_affine(tmp_path: Path) -> None:
    vol = load_volume(_sample("CT_small.dcm"))
    out = save_volume(vol, tmp_path / "ct.nii.gz")
    nii = load_volume(out)
    assert np.array_equal(nii.array, vol.array) and nii.value_scaling == (1.0, -1024.0)
    np.testing.assert_allclose(nii.affine, vol.affine, atol=1e-5)


def test_output_folder_rules_and_bad_inputs(tmp_path: Path) -> None:
    vol = load_volume(_sample("MR_small.dcm"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(FileExistsError):
        save_dicom(vol, tmp_path / "full")
    (tmp_path / "empty").mkdir()
    assert len(save_dicom(vol, tmp_path / "empty")) == 1
    with pytest.raises(ValueError, match="lossy_method"):
        save_dicom(vol, tmp_path / "m", lossy_ratio=3, lossy_method="bad-method!")
    with pytest.raises(ValueError, match="does not match"):
        save_dicom(Volume(vol.array[:10], header=vol.header), tmp_path / "s")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="is not a NIfTI or DICOM file"):
        load_volume(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="no DICOM image") as info:
        load_volume(tmp_path / "full")
    assert "archive" not in str(info.value)
    (tmp_path / "niftis").mkdir()
    (tmp_path / "niftis" / "a.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="holds NIfTI files.*medgpu archive"):  # a folder of NIfTI files
        load_volume(tmp_path / "niftis")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full", "niftis", "x.txt"]

